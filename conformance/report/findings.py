"""The text of a finding (a clause an implementation fails, warns on, passes against its
listed deviation, or that bnconf could not judge), worded once for every place that shows
one: the report's Markdown and HTML, `bnconf audit`, the pytest items and the reproducers.

A finding is the report's finding dict (reports/schema.json); records and `bnconf audit`
entries are turned into one here. Its text is a heading and detail lines, each a tuple of
segments: plain strings, Code (a command, a case), Link (a clause in the spec) and Block (a
traceback). A surface renders the segments (plain below; markdown.py and html.py escape and
mark them up) and lays the lines out, but never words them itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from bnconf.report.statuses import SPEC_LINK, symbol
from bnconf.spec.render import anchor


@dataclass(frozen=True)
class Code:
    """Shown verbatim: a command to run, a case's JSON."""
    text: str


@dataclass(frozen=True)
class Link:
    text: str
    href: str | None


@dataclass(frozen=True)
class Block:
    """Preformatted lines under the line that introduces them: a traceback."""
    text: str


ABSENT = " (not in this checkout: the run writes it)"
UNJUDGED = "bnconf could not judge this clause (an error of bnconf's, not the implementation's):"


def reproduce_command(folder) -> str | None:
    """How to rerun a saved reproducer; None for the reason one was not written."""
    if not folder or str(folder).startswith("("):   # "(reproducer not written: ...)"
        return None
    return f"python {folder}/repro.py"


def from_record(r: dict, spec=None) -> dict:
    """A record's finding: the fields its text is made of, with the clause's title and spec
    link when `spec` is given. `_blocks` and `_repro_present` are what the report adds to a
    record (the clauses it blocks, whether its reproducer is in the checkout)."""
    cmp = r.get("comparison") or {}
    f = {k: r.get(k) for k in ("implementation", "device", "dtype", "clause", "status", "note", "seed", "case",
                               "reproducer", "measured", "allowed", "ratio", "cases", "failed")}
    known = spec is not None and r["clause"] in spec.clauses
    f["title"] = spec.clauses[r["clause"]].title if known else ("" if spec is not None else None)
    f["link"] = SPEC_LINK.format(anchor(r["clause"])) if known else None
    f["expected"], f["actual"], f["index"], f["quantity"] = (cmp.get("expected"), cmp.get("actual"),
                                                             cmp.get("index"), cmp.get("key"))
    f["known"] = r.get("known")
    f["blocks"] = r.get("_blocks", [])
    if r.get("traceback"):
        f["traceback"] = r["traceback"]
    if reproduce_command(r.get("reproducer")):
        f["reproduce"] = reproduce_command(r["reproducer"])
        f["reproducer_present"] = r.get("_repro_present")
    return f


def from_audit(v: dict) -> dict:
    """An entry of a `bnconf audit` report (a violation, a warning or an error) as a finding."""
    f = {"clause": v["clause"], "title": v.get("title"), "note": v.get("message"), "seed": v.get("seed"),
         "case": v.get("example"), "failed": v.get("failed_cases"), "cases": v.get("cases"),
         "blocks": v.get("blocks") or [], "traceback": v.get("traceback"), "reproducer": v.get("reproducer")}
    f["reproduce"] = reproduce_command(f["reproducer"])
    return f


def from_outcome(impl_name, device, dtype, clause, case, outcome) -> dict:
    """What a reproducer says the audit found, from the case and outcome it saves (no status:
    a listed deviation is recognised after the reproducer is written)."""
    cmp = outcome.comparison.to_json() if outcome is not None and outcome.comparison is not None else {}
    return {"implementation": impl_name, "device": device, "dtype": dtype, "clause": clause.id,
            "title": clause.title, "note": outcome.note if outcome is not None else "", "case": case.to_json(),
            "measured": cmp.get("measured"), "allowed": cmp.get("allowed"), "ratio": cmp.get("ratio"),
            "quantity": cmp.get("key"), "index": cmp.get("index"), "actual": cmp.get("actual"),
            "expected": cmp.get("expected")}


def heading(f: dict) -> tuple:
    """STATUS: implementation device dtype: clause title (each part only when known)."""
    out = [f"{f['status'].upper()}: "] if f.get("status") else []
    out += [Code(str(f["implementation"])), f" {f.get('device')} {f.get('dtype')}: ", Link(f["clause"], f.get("link"))]
    if f.get("title") is not None:
        out.append(f" {f['title']}")
    return tuple(out)


def details(f: dict) -> list[tuple]:
    """The lines under a finding's heading: what the check said, what was measured against
    what it allowed, the smallest failing case and its seed, the clauses that fail only
    because of it (through the spec's depends_on), bnconf's own traceback, the listed deviation, and how
    to reproduce it."""
    lines = []
    if "note" in f:
        lines.append((f["note"] or "",))
    if f.get("measured") is not None:
        lines.append((f"measured error {f['measured']} vs allowed {f['allowed']} (ratio {f['ratio']}); "
                      f"{f.get('quantity') or ''} at {f.get('index')}: actual {f.get('actual')}, "
                      f"expected {f.get('expected')}",))
    case = []
    if f.get("failed") is not None and f.get("cases") is not None:
        case.append(f"{f['failed']} of {f['cases']} cases failed")
    if f.get("seed") is not None:
        case.append(f"seed {f['seed']}")
    if f.get("case") is not None:
        case.append("smallest case ")
    if case:
        lines.append(("; ".join(case),) + ((Code(json.dumps(f["case"])),) if f.get("case") is not None else ()))
    if f.get("blocks"):
        lines.append((f"blocks (fail only because of this): {', '.join(sorted(set(f['blocks'])))}",))
    if f.get("traceback"):
        lines.append((UNJUDGED, Block(f["traceback"])))
    if f.get("known"):
        lines.append((f"known deviation: {f['known']['reason']} ({f['known']['link']})",))
        if f.get("status") == "unexpected_pass":
            lines.append((f"listed as a known deviation ({f['known'].get('where')}) but it passed",))
    if f.get("reproduce"):
        lines.append(("reproduce: ", Code(f["reproduce"])) + ((ABSENT,) if f.get("reproducer_present") is False
                                                             else ()))
    elif f.get("reproducer"):
        lines.append((f"reproducer: {f['reproducer']}",))
    return lines


def blocked_by(roots) -> str:
    return f"blocked by {', '.join(roots)}"


def summary(f: dict) -> str:
    """One line per finding where many are listed (records of other runs)."""
    ratio = f" (ratio {f['ratio']:.3g})" if isinstance(f.get("ratio"), (int, float)) else ""
    note = (f.get("note") or "")[:200]
    return (f"{symbol(f['status'])} {f['implementation']} {f['dtype']} {f['clause']}{ratio}"
            + (f": {note}" if note else ""))


def plain(line: tuple, indent: str = "") -> str:
    """A line as terminal text, a Block's lines indented two more."""
    out = indent
    for s in line:
        if isinstance(s, Block):
            out += "".join(f"\n{indent}  {t}" for t in s.text.strip().split("\n"))
        else:
            out += s.text if isinstance(s, (Code, Link)) else s
    return out


def plain_details(f: dict, indent: str) -> list[str]:
    """The details as terminal lines, an empty note left out."""
    return [plain(line, indent) for line in details(f) if any(s != "" for s in line)]


def text(f: dict, indent: str = "  ") -> str:
    """A whole finding as terminal text: its heading, then its details indented."""
    return "\n".join([plain(heading(f))] + plain_details(f, indent))

"""report.md from report.json's dict: the content of report.html, as Markdown."""
from __future__ import annotations

from urllib.parse import quote

from bnconf.report import findings, other_runs, sections
from bnconf.report.findings import Block, Code, Link
from bnconf.report.plots import plots
from bnconf.report.statuses import FP_KEYS, REPRO_NOTE, SPEC_LINK, symbol
from bnconf.spec.render import anchor


def segment(s) -> str:
    if isinstance(s, Code):
        return f"`{s.text}`"
    if isinstance(s, Link):
        return f"[{s.text}]({s.href})"
    if isinstance(s, Block):   # fenced under the bullet it belongs to
        return "\n  ```\n  " + s.text.strip().replace("\n", "\n  ") + "\n  ```"
    return s


def line(pieces: tuple) -> str:
    return "".join(segment(s) for s in pieces)


def finding(f: dict) -> list[str]:
    return [f"### {line(findings.heading(f))}", ""] + [f"- {line(d)}" for d in findings.details(f)] + [""]


def _clause_link(c: str) -> str:
    return f"[{c}]({SPEC_LINK.format(anchor(c))})"


def _other_runs(groups: list[dict]) -> list[str]:
    if not groups:
        return []
    L = [f"## {other_runs.TITLE}", "", other_runs.INTRO, ""]
    for g in groups:
        L += [f"### {other_runs.heading(g)}", "", other_runs.group_summary(g), "",
              "| implementation | versions | statuses |", "|---|---|---|"]
        for i in g["implementations"]:
            L.append(f"| `{i['implementation']}` | {other_runs.versions_text(i['versions'])} | "
                     f"{other_runs.count_text(i['summary'])} |")
        L.append("")
        L += [f"- {findings.summary(f)}" for f in g["findings"]]
        if g["findings"]:
            L.append("")
    return L


def _documents(rep: dict) -> list[str]:
    L = ["## Source documents", "",
         "Each document's code, transcribed in adapters/snippets/, audited under the profile it claims; "
         "and each API fact it states, checked against the framework installed now.", ""]
    for d in rep.get("documents", []):
        L.append(f"### {d['document']}: {d['title']}")
        L.append("")
        for s in d["specimens"]:
            L.append(f"- `{s['implementation']}` (profile {s['profile']}): violates "
                     + (", ".join(_clause_link(c) for c in s["violates"]) or "nothing")
                     + f"; conforms to {len(s['conforms'])} clauses")
            for c, note in sorted((s.get("findings") or {}).items()):
                if note:
                    L.append(f"  - {c}: {note[:200]}")
        for f in d["facts"]:
            L.append(f"- fact {f['fact']} **{f['status']}**: \u201c{f['claim']}\u201d \u2192 {f['observed']}")
        if not d["specimens"] and not d["facts"]:
            L.append("- (not run in these results)")
        L.append("")
    return L


def render_md(rep: dict) -> str:
    L = ["# bnconf discrepancy report", "", sections.stamp_line(rep), "", "Measured on:", ""]
    L += [f"- {p}" for p in sections.platform_lines(rep)] + [f"- GPU: {sections.gpu(rep)}", ""]
    L += ["Statuses: pass · FAIL (a finding) · known (a listed deviation, still measured) · XPASS (a listed "
          "deviation that passed) · n/s (unsupported by the implementation) · ERROR (no result) · not run.", "",
          "Summary: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["summary"].items())), ""]
    apart = sections.other_runs_line(rep)
    L += [apart, ""] if apart else []
    L += ["## Implementations", "", "| implementation | profile | device | versions | cases | seconds | notes |",
          "|---|---|---|---|---|---|---|"]
    for name, profile, device, vers, cases, secs, notes in sections.implementation_rows(rep):
        L.append(f"| `{name}` | {profile} | {device} | {vers} | {cases} | {secs:.1f} | {notes} |")
    clauses = [c["id"] for c in rep["clauses"]]
    amb = sections.ambiguous(rep)
    L += ["", "## Matrix (implementation × clause)", ""]
    for row in rep["matrix"]:
        L.append(f"### `{row['implementation']}` on {sections.device(row['implementation'], row, amb)}")
        L.append("")
        cells = [(c, row["cells"][c]) for c in clauses if c in row["cells"]]
        L.append("| " + " | ".join(_clause_link(c) for c, _ in cells) + " |")
        L.append("|" + "---|" * len(cells))
        L.append("| " + " | ".join(f"{symbol(v['status'])} ({v['cases']})" for _, v in cells) + " |")
        L.append("")
    L += ["## Conventions: declared profile vs measured fingerprint", "",
          "| implementation | " + " | ".join(FP_KEYS) + " |", "|---|" + "---|" * len(FP_KEYS)]
    for c in rep["conventions"]:
        m = c["measured"] or {}
        cells = []
        for k in FP_KEYS:
            d, v = c["declared"].get(k), m.get(k)
            cells.append(f"{v}" if d == v or d is None else f"**{v}** (declared {d})")
        L.append(f"| `{c['implementation']}` ({c['profile']}) | " + " | ".join(cells) + " |")
    L += ["", "## Findings", "", REPRO_NOTE, ""]
    for f in sections.finding_order(rep):
        L += finding(f)
    L += _documents(rep)
    L += _other_runs(rep.get("other_runs") or [])
    L += ["## Accuracy plots", ""]
    for i, svg in enumerate(plots(rep)):
        L.append(f"![plot {i + 1}](data:image/svg+xml;utf8,{quote(svg, safe='')})")
        L.append("")
    L += ["## Porting guide", "",
          "Copying a trained layer's weights: every profile normalizes eval with the stored running "
          "variance as it is, so the statistics are copied unchanged and eps is carried over by value. "
          "The other columns are for training that continues in the target.", "",
          "| from | to | weights | momentum | default momentum | eps | running variance (training on) |",
          "|---|---|---|---|---|---|---|"]
    for p in rep["porting"]:
        L.append(f"| {p['from']} | {p['to']} | {p.get('weights_text', '')} | {p['momentum']} | "
                 f"{p['default_momentum']} | {p['eps']} | {p['running_variance']} |")
    return "\n".join(L) + "\n"

"""Write known-deviation files from a run's records (`bnconf known --pin`, `--draft`).

--pin keeps what a person wrote (each entry's reason and link) and replaces what a run can
measure: one entry per deviation kind the old entry covered, its `match` the kind and its
`case` that kind's smallest failing case, with the platform it was measured on. An old entry
that covered nothing in the run is dropped (and said so); a failure no entry covered is left
for a person (--draft prints it with the reason TODO).
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from bnconf.results.known import known_path


class _Flow(dict):
    """A mapping written on one line (a case, a platform): the file stays readable."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(), flow_style=True))
class _FlowList(list):
    pass


_Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def _dump(doc) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


STOP = {"a", "an", "the", "with", "in", "of", "to", "is", "and", "its", "on", "for", "as", "by", "it"}


def _size(case: dict) -> tuple:
    n = 1
    for d in case.get("shape", ()):
        n *= d
    return (n, case.get("steps", 0), case.get("kappa", 0.0))


def _kinds_by_entry(entry: dict, recs: list[dict]) -> dict:
    """kind -> {dtypes, case, platform} over the records this (old) entry covers."""
    out: dict = {}
    for r in recs:
        if r.get("clause") != entry["clause"] or r.get("dtype") not in entry.get("dtypes", [r.get("dtype")]) \
                or r.get("device") not in entry.get("devices", [r.get("device")]):
            continue
        for kind, k in (r.get("kinds") or {}).items():
            if entry.get("match") and entry["match"] not in kind:
                continue
            slot = out.setdefault(kind, {"dtypes": set(), "case": k["case"], "platform": r.get("platform")})
            slot["dtypes"].add(r["dtype"])
            if _size(k["case"]) < _size(slot["case"]):
                slot["case"] = k["case"]
    return out


def _slug(text: str, taken: set) -> str:
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP][:4]
    base = "-".join(words) or "cause"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def pin_file(impl: str, recs: list[dict], directory: Path | None = None) -> tuple[str, list[str]]:
    """(new YAML text, notes for the person running it) for one implementation's file."""
    path = known_path(impl, directory)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    causes = dict(data.get("causes") or {})
    by_text = {(c["reason"], c["link"]): name for name, c in causes.items()}
    new, notes = [], []
    for e in data.get("deviations") or []:
        e = dict(causes.get(e.get("cause"), {}), **e)
        kinds = _kinds_by_entry(e, recs)
        if not kinds:
            notes.append(f"{impl}: {e['clause']} {e.get('dtypes', '')}: covered nothing in these records: dropped")
            continue
        key = (e["reason"], e["link"])
        if key not in by_text:
            by_text[key] = _slug(e["reason"], set(causes))
            causes[by_text[key]] = {"reason": e["reason"], "link": e["link"]}
        for kind, k in sorted(kinds.items()):
            entry = {"clause": e["clause"], "dtypes": _FlowList(sorted(k["dtypes"]))}
            if e.get("devices"):
                entry["devices"] = _FlowList(e["devices"])
            entry.update({"match": kind, "cause": by_text[key], "case": _Flow(k["case"])})
            if k["platform"]:
                entry["pinned_on"] = _Flow(k["platform"])
            new.append(entry)
    used = {e["cause"] for e in new}
    doc = {"implementation": impl, "causes": {n: c for n, c in causes.items() if n in used}, "deviations": new}
    return _dump(doc), notes


def uncovered(records: list[dict]) -> list[dict]:
    """Failures no entry lists (status fail/warn after the known deviations were applied)."""
    return [r for r in records if r.get("status") in ("fail", "warn") and r.get("clause") not in (None, "*")]


def draft(records: list[dict]) -> dict[str, str]:
    """YAML drafts for every unlisted failure in `records`, one per implementation, pinned like
    --pin. The reason and link are left TODO on purpose: a person reads the finding and its
    reproducer, then writes them."""
    per: dict = {}
    for r in uncovered(records):
        for kind, k in (r.get("kinds") or {"deviation": {"case": r.get("case")}}).items():
            per.setdefault(r["implementation"], []).append(
                {"clause": r["clause"], "dtypes": _FlowList([r["dtype"]]), "match": kind, "reason": "TODO", "link": "TODO",
                 "case": _Flow(k["case"]), **({"pinned_on": _Flow(r["platform"])} if r.get("platform") else {})})
    return {impl: _dump({"implementation": impl, "deviations": es}) for impl, es in per.items()}

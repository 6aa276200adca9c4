"""Known deviations: one YAML file per implementation in adapters/known/.

A known deviation is still run and measured. Its record becomes `known` when the clause
fails as listed; an entry whose clause passes is an `unexpected_pass`, and an entry that
matches no record at all is reported as an error: both fail the audit, so the file never
goes stale silently (the array-api-tests complaint).

    implementation: torch.nn.BatchNorm2d
    deviations:
      - clause: BN-DTYPE-ACCUM
        dtypes: [float16, bfloat16]     # optional; default every dtype
        devices: [cpu]                  # optional; default every device
        reason: why, in one or two sentences
        link: https://github.com/...    # upstream issue, or where we measured it
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from .spec_loader import SpecError

KNOWN_KEYS = {"clause", "dtypes", "devices", "reason", "link"}


def known_dir() -> Path:
    return Path(str(resources.files("bnconf.adapters").joinpath("known")))


def known_path(impl_name: str, directory: Path | None = None) -> Path:
    return (directory or known_dir()) / f"{impl_name}.yaml"


def load_known(impl_name: str, spec, directory: Path | None = None) -> list[dict]:
    path = known_path(impl_name, directory)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise SpecError(path, mark.line + 1 if mark else None, "yaml", str(exc.problem)) from None

    def line(i, key=None):
        try:
            seq = next(v for k, v in root.value if k.value == "deviations")
            node = seq.value[i]
            if key:
                node = next(v for k, v in node.value if k.value == key)
            return node.start_mark.line + 1
        except Exception:
            return None

    if not isinstance(data, dict) or data.get("implementation") != impl_name:
        raise SpecError(path, 1, "implementation", f"must name {impl_name!r}")
    entries = data.get("deviations") or []
    if not isinstance(entries, list):
        raise SpecError(path, None, "deviations", "must be a list")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise SpecError(path, line(i), f"deviations/{i}", "must be a mapping")
        extra = set(e) - KNOWN_KEYS
        if extra:
            raise SpecError(path, line(i), f"deviations/{i}", f"unknown keys {sorted(extra)}")
        for key in ("clause", "reason", "link"):
            if not e.get(key):
                raise SpecError(path, line(i), f"deviations/{i}/{key}", "is required")
        if e["clause"] not in spec.clauses:
            raise SpecError(path, line(i, "clause"), f"deviations/{i}/clause",
                            f"unknown clause ID {e['clause']!r}")
        out.append(dict(e, _where=f"{path}:{line(i)}"))
    return out


def _matches(entry, rec) -> bool:
    return (entry["clause"] == rec["clause"]
            and rec["dtype"] in entry.get("dtypes", [rec["dtype"]])
            and rec["device"] in entry.get("devices", [rec["device"]]))


def apply_known(records: list[dict], entries: list[dict], impl_name: str, device: str) -> list[dict]:
    """Mark listed deviations. An entry's matched failures become `known`. An entry whose
    deviation was observed nowhere in this run is an `unexpected_pass` (its matched passes are
    marked so), and an entry that matches no record at all is an `error` (stale): both fail the
    audit. A dtype where a sampled deviation happens not to show stays a plain `pass`."""
    extra = []
    for e in entries:
        matched = [r for r in records if _matches(e, r) and r["status"] in ("fail", "warn", "pass", "known")]
        note = {"reason": e["reason"], "link": e["link"], "where": e["_where"]}
        if any(r["status"] in ("fail", "warn", "known") for r in matched):
            for r in matched:
                if r["status"] in ("fail", "warn"):
                    r["status"], r["known"] = "known", note
            continue
        devs = e.get("devices")
        if matched:
            for r in matched:
                r["status"], r["known"] = "unexpected_pass", note
        elif devs is None or device in devs:
            extra.append({"implementation": impl_name, "device": device, "dtype": ",".join(e.get("dtypes", ["*"])),
                          "clause": e["clause"], "status": "error", "cases": 0, "passed": 0, "failed": 0,
                          "note": f"known-deviation entry {e['_where']} matches no result (stale entry)"})
    return records + extra

def draft(records: list[dict]) -> dict[str, str]:
    """YAML drafts of known-deviation files for every unexpected failure in `records`, one per
    implementation: each entry lists the failing dtypes and the measured note. The reason is
    left as TODO on purpose: a person reads the finding and its reproducer, then writes it."""
    per: dict = {}
    for r in records:
        if r.get("status") != "fail" or r.get("clause") in (None, "*"):
            continue
        per.setdefault(r["implementation"], {}).setdefault(r["clause"], {"dtypes": set(), "notes": set()})
        e = per[r["implementation"]][r["clause"]]
        e["dtypes"].add(r.get("dtype"))
        if r.get("note"):
            e["notes"].add(r["note"][:160])
    out = {}
    for impl, clauses in per.items():
        lines = [f"implementation: {impl}", "deviations:"]
        for clause, e in sorted(clauses.items()):
            lines += [f"  - clause: {clause}", f"    dtypes: [{', '.join(sorted(e['dtypes']))}]",
                      "    reason: TODO " + "; ".join(sorted(e["notes"]))[:300].replace(":", " -"),
                      "    link: TODO"]
        out[impl] = "\n".join(lines) + "\n"
    return out

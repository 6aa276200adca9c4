"""Known deviations: one YAML file per implementation in adapters/known/, each entry pinned to
the evidence that shows it.

A known deviation is still run and measured. An entry names the clause, the kind of
deviation it expects (`match`: a substring of the failure's kind, see checks.Outcome.kind,
e.g. "eps_placement=outside_sqrt" or "within the model only at float16 precision"), and the
case that shows it (`case`, with the platform it was pinned on). A failure under the clause
of a kind no entry lists stays a FAIL. Every run re-runs each entry's pinned case: "fixed
upstream" (an unexpected pass) is decided by that case, deterministically, never by whether
the generated cases happened to hit the deviation again. Where the pinned case passes on a
platform other than the one it was pinned on, the deviation is platform-dependent: it is
reported as such, never as a pass or a failure.

    implementation: haiku.BatchNorm
    causes:                             # optional: explanations shared by several entries
      one-pass:
        reason: the variance is mean(x^2) - mean(x)^2 in the input dtype
        link: https://github.com/google-deepmind/dm-haiku/blob/v0.0.17/haiku/_src/batch_norm.py#L170
    deviations:
      - clause: BN-DTYPE-ACCUM
        dtypes: [float16, bfloat16]     # optional; default every dtype
        devices: [cpu]                  # optional; default every device
        match: within the model only at float16 precision
        max_ratio: 100                  # optional: a larger failure is not this deviation
        cause: one-pass                 # or reason: + link: in the entry itself
        case: {...}                     # the pinned case (bnconf known --pin writes it)
        pinned_on: {...}                # the platform it was pinned on
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml

from bnconf.spec.loader import SpecError

ENTRY_KEYS = {"clause", "dtypes", "devices", "match", "max_ratio", "cause", "reason", "link", "case", "pinned_on"}
BAD_WHERE = ("fail", "warn")


def known_dir() -> Path:
    """BNCONF_KNOWN_DIR overrides the installed folder (an audit with none listed: `known --pin`)."""
    if os.environ.get("BNCONF_KNOWN_DIR"):
        return Path(os.environ["BNCONF_KNOWN_DIR"])
    return Path(str(resources.files("bnconf.adapters").joinpath("known")))


def known_path(impl_name: str, directory: Path | None = None) -> Path:
    return (directory or known_dir()) / f"{impl_name}.yaml"


def _where(path: Path) -> str:
    """The file as a reader finds it in a checkout: adapters/known/NAME.yaml."""
    return f"adapters/known/{path.name}" if path.parent.name == "known" else str(path)


def _line_finder(root):
    def line(i, key=None):
        try:
            seq = next(v for k, v in root.value if k.value == "deviations")
            node = seq.value[i]
            if key:
                node = next(v for k, v in node.value if k.value == key)
            return node.start_mark.line + 1
        except Exception:
            return None
    return line


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
    line = _line_finder(root)
    if not isinstance(data, dict) or data.get("implementation") != impl_name:
        raise SpecError(path, 1, "implementation", f"must name {impl_name!r}")
    causes = data.get("causes") or {}
    entries = data.get("deviations") or []
    if not isinstance(entries, list) or not isinstance(causes, dict):
        raise SpecError(path, None, "deviations", "must be a list (and causes a mapping)")
    return [_entry(path, i, e, causes, spec, line) for i, e in enumerate(entries)]


def _entry(path, i, e, causes, spec, line) -> dict:
    at = f"deviations/{i}"
    if not isinstance(e, dict):
        raise SpecError(path, line(i), at, "must be a mapping")
    extra = set(e) - ENTRY_KEYS
    if extra:
        raise SpecError(path, line(i), at, f"unknown keys {sorted(extra)}")
    if e.get("cause") is not None:
        if e["cause"] not in causes:
            raise SpecError(path, line(i, "cause"), f"{at}/cause", f"no cause {e['cause']!r} under causes:")
        e = dict(causes[e["cause"]], **e)
    for key in ("clause", "match", "case", "reason", "link"):
        if not e.get(key):
            raise SpecError(path, line(i), f"{at}/{key}", "is required (bnconf known --pin writes match and case)")
    if e["clause"] not in spec.clauses:
        raise SpecError(path, line(i, "clause"), f"{at}/clause", f"unknown clause ID {e['clause']!r}")
    if not isinstance(e["case"], dict):
        raise SpecError(path, line(i, "case"), f"{at}/case", "must be a case mapping (as in a record's 'case')")
    return dict(e, _where=f"{_where(path)}:{line(i)}")


def applies(entry, dtype, device, *, strict_dtype=True) -> bool:
    dt_ok = dtype in entry.get("dtypes", [dtype]) or (not strict_dtype and dtype == "*")
    return dt_ok and device in entry.get("devices", [device])


def kind_matches(entry, kind: str, ratio=None) -> bool:
    if entry["match"] not in kind:
        return False
    return entry.get("max_ratio") is None or ratio is None or ratio <= float(entry["max_ratio"])


def same_platform(a: dict, b: dict) -> bool:
    """Same CPU model, relevant flags and architecture: what can change a low-precision result."""
    return all(a.get(k) == b.get(k) for k in ("cpu", "flags", "machine"))


def _note(e) -> dict:
    return {"reason": e["reason"], "link": e["link"], "where": e["_where"], "match": e["match"]}


def replay(entries: list[dict], device: str, platform: dict, evaluate) -> list[dict]:
    """Re-run every applicable entry's pinned case: `evaluate(case_json)` returns the outcomes.
    Each result: the entry, and `reproduced` / `passes` / `other` (with the kind seen) /
    `platform` (passes, but the case was pinned on another platform) / `error`."""
    out = []
    for e in entries:
        dtype = e["case"].get("dtype", "*")
        if not applies(e, dtype, device, strict_dtype=False):
            continue
        try:
            outs = [o for o in evaluate(e["case"]) if o.clause == e["clause"]]
        except Exception as exc:  # the pinned case could not be run: bnconf's or the adapter's problem, said
            out.append({"entry": e, "result": "error", "detail": f"{type(exc).__name__}: {exc}", "dtype": dtype})
            continue
        bad = [o for o in outs if not o.ok and not o.error]
        ratio = lambda o: o.comparison.ratio if o.comparison is not None else None  # noqa: E731
        if any(kind_matches(e, o.kind, ratio(o)) for o in bad):
            result, detail = "reproduced", ""
        elif bad:
            result, detail = "other", bad[0].kind
        elif any(o.error for o in outs):
            result, detail = "error", next(o.error for o in outs if o.error)
        elif e.get("pinned_on") and not same_platform(e["pinned_on"], platform):
            result, detail = "platform", ""
        else:
            result, detail = "passes", ""
        out.append({"entry": e, "result": result, "detail": detail, "dtype": dtype})
    return out


def apply_known(records: list[dict], entries: list[dict], impl_name: str, device: str,
                replayed: list[dict] | None = None) -> list[dict]:
    """Mark listed deviations: a failing record whose every deviation kind an entry lists
    becomes `known`; the pinned cases' results (see replay) decide whether an entry still
    holds: reproduced (its record is `known` even where the generated cases missed it),
    passes (`unexpected_pass`: fixed upstream, or a stale entry), another kind (`fail`),
    platform (reported, status unchanged)."""
    for r in records:
        if r["status"] not in BAD_WHERE or not r.get("kinds"):
            continue
        mine = [e for e in entries if e["clause"] == r["clause"] and applies(e, r["dtype"], r["device"])]
        listed = {k: next((e for e in mine if kind_matches(e, k, r.get("ratio"))), None) for k in r["kinds"]}
        unlisted = [k for k, e in listed.items() if e is None]
        if not unlisted:
            r["status"], r["known"] = "known", _note(next(iter(listed.values())))
        elif len(unlisted) < len(listed):
            r["note"] = f"not a listed deviation: {unlisted[0]} (listed kinds also seen)"
            r["case"] = r["kinds"][unlisted[0]]["case"]
    extra = []
    for res in replayed or ():
        e = res["entry"]
        rec = next((r for r in records if r["clause"] == e["clause"] and r.get("dtype") == res["dtype"]), None)
        pinned = {"result": res["result"], "detail": res["detail"], "where": e["_where"]}
        if res["result"] == "reproduced":
            if rec is not None and rec["status"] == "pass":
                rec["status"], rec["known"] = "known", _note(e)
                rec["note"] = "the entry's pinned case reproduces it (the generated cases did not reach it)"
            if rec is not None:
                rec.setdefault("pinned", []).append(pinned)
            continue
        if res["result"] == "platform":
            if rec is not None:
                rec.setdefault("pinned", []).append(pinned)
            continue
        status = {"passes": "unexpected_pass", "other": "fail", "error": "error"}[res["result"]]
        why = {"passes": "its pinned case passes now (fixed upstream? then remove the entry)",
               "other": f"its pinned case now deviates as {res['detail']!r}, not as {e['match']!r}",
               "error": f"its pinned case could not be judged: {res['detail']}"}[res["result"]]
        extra.append({"implementation": impl_name, "device": device, "dtype": res["dtype"], "clause": e["clause"],
                      "status": status, "cases": 1, "passed": int(res["result"] == "passes"), "failed": 0,
                      "case": e["case"], "known": _note(e), "pinned": [pinned],
                      "note": f"known-deviation entry {e['_where']}: {why}"})
    return records + extra

"""Result records: one JSON line per (implementation, device, dtype, clause).

A record is the unit everything downstream reads (report, fingerprint, pytest items).
Statuses: pass, fail (a MUST clause violated), warn (a SHOULD clause not met: shown, fails
only a --strict audit), blocked (fails only because a clause it depends on fails: shown with
`blocked_by`, not a finding of its own), known (a listed deviation, still run and measured), unexpected_pass
(a listed deviation that passed), unsupported (the implementation cannot be asked; with
the capability), error (bnconf or the harness could not judge: with the traceback), not_run
(with the reason).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

BAD = ("fail", "unexpected_pass", "error")
STRICT_BAD = BAD + ("warn",)


def violation_status(level: str) -> str:
    """A MUST clause not met fails; a SHOULD clause warns."""
    return "fail" if level == "MUST" else "warn"


def tally_record(impl, device, versions, dtype, clause, tally, shrunk, seed, repro_path, level="MUST",
                 blocked_by=()) -> dict:
    case, outcome = shrunk if shrunk and shrunk[1] is not None else (tally.failing_case, tally.failing)
    show = outcome if tally.failed else tally.worst
    if tally.errors:
        show, case = tally.error, tally.error_case
    cmp = show.comparison.to_json() if show is not None and show.comparison is not None else None
    status = "error" if tally.errors else ("blocked" if blocked_by else violation_status(level)) if tally.failed \
        else "pass"
    rec = {
        "implementation": impl.name, "family": impl.family, "profile": impl.profile,
        "versions": versions, "device": device, "dtype": dtype, "clause": clause, "level": level,
        "status": status,
        "cases": tally.cases, "passed": tally.passed, "failed": tally.failed,
        "measured": cmp["measured"] if cmp else None, "allowed": cmp["allowed"] if cmp else None,
        "ratio": cmp["ratio"] if cmp else None, "comparison": cmp,
        "note": (show.note if show is not None else ""),
        "measured_conventions": tally.measured,
        "seed": seed,
        "samples": [[k, round(r, 6)] for k, r in tally.samples],
    }
    if tally.errors:
        rec["errors"] = tally.errors
        rec["traceback"] = tally.error.error
        rec["case"] = case.to_json()
    elif tally.failed:
        if blocked_by:
            rec["blocked_by"] = list(blocked_by)
        rec["case"] = case.to_json()
        rec["reproducer"] = repro_path
        rec["kinds"] = {k: {"cases": n, "case": c.to_json()} for k, (n, c) in sorted(tally.kinds.items())}
    return rec


def status_record(impl_name, family, profile, versions, device, dtype, clause, status, message) -> dict:
    return {"implementation": impl_name, "family": family, "profile": profile, "versions": versions,
            "device": device, "dtype": dtype, "clause": clause, "status": status, "cases": 0,
            "passed": 0, "failed": 0, "measured": None, "allowed": None, "ratio": None,
            "comparison": None, "note": message, "measured_conventions": {}, "seed": None}


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename: an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-" + path.name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is for sharing
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append whole lines and flush: a killed run keeps every record already written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(paths) -> list[dict]:
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            continue
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:  # a line cut by a kill: say where, keep the rest
                out.append({"status": "error", "implementation": "?", "clause": "?", "device": "?",
                            "dtype": "?", "note": f"{p}:{i}: unreadable record ({exc.msg})"})
    return out

"""Result records: one JSON line per (implementation, device, dtype, clause), and the one
place a clause's verdict, the case and message it shows, and what blocks it are decided for
every front end (the worker's JSONL, `bnconf audit`, the pytest items).

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

from bnconf.cases.capabilities import missing_capability

BAD = ("fail", "unexpected_pass", "error")
STRICT_BAD = BAD + ("warn",)
# an AuditReport (`bnconf audit`) lists its clauses by status
AUDIT_LISTS = {"fail": "violations", "warn": "warnings", "error": "errors", "blocked": "blocked",
               "pass": "passed", "not_run": "not_exercised"}


def violation_status(level: str) -> str:
    """A MUST clause not met fails; a SHOULD clause warns."""
    return "fail" if level == "MUST" else "warn"


def verdict(tally, level: str, blocked_by=()) -> str:
    """One clause on one dtype: error when bnconf could not judge a case (never a pass or a
    fail), blocked when it fails only because a root clause does, else fail or warn by the
    clause's level, or pass."""
    if tally.errors:
        return "error"
    if tally.failed:
        return "blocked" if blocked_by else violation_status(level)
    return "pass"


def shown(tally, shrunk=None) -> tuple:
    """(case, outcome) a failing clause shows and reproduces: the shrunk case when shrinking
    kept a failure, else the smallest failing case the audit saw."""
    return shrunk if shrunk and shrunk[1] is not None else (tally.failing_case, tally.failing)


def message(outcome) -> str:
    """A failing outcome in one line: the check's note, then what the comparison measured."""
    msg = outcome.note or ""
    if outcome.comparison is not None:
        msg = (msg + "; " if msg else "") + outcome.comparison.describe()
    return msg


def saved_reproducer(write, case, outcome) -> str:
    """The folder `write` saved the reproducer in, or why it could not: the finding stands
    either way."""
    try:
        return write(case, outcome)
    except Exception as exc:
        return f"(reproducer not written: {type(exc).__name__}: {exc})"


def tally_record(impl, device, versions, dtype, clause, tally, shrunk, seed, repro_path, level="MUST",
                 blocked_by=()) -> dict:
    case, outcome = shown(tally, shrunk)
    show = outcome if tally.failed else tally.worst
    if tally.errors:
        show, case = tally.error, tally.error_case
    cmp = show.comparison.to_json() if show is not None and show.comparison is not None else None
    rec = {
        "implementation": impl.name, "family": impl.family, "profile": impl.profile,
        "versions": versions, "device": device, "dtype": dtype, "clause": clause, "level": level,
        "status": verdict(tally, level, blocked_by),
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


def unsupported_record(impl, versions, device, clause) -> dict | None:
    """A clause whose `needs` the implementation lacks is unsupported: recorded, never run."""
    lacking = missing_capability(impl.capabilities, clause.needs)
    if not lacking:
        return None
    return status_record(impl.name, impl.family, impl.profile, versions, device, "*", clause.id, "unsupported",
                         f"the implementation lacks capability {lacking!r}")


def clause_records(impl, device, versions, seed, result, clause, dtypes, write_repro) -> list[dict]:
    """One record per dtype of one clause: its tally (with a reproducer, saved by
    write_repro(case, outcome), when it is a finding of its own), or not_run when no case
    exercised it."""
    out, cid = [], clause.id
    only = clause.focus.get("dtype")   # BN-DTYPE-F64 is about float64 only: no record for the others
    for dtype in dtypes:
        t = result.tallies.get((cid, dtype))
        if t is None and only and dtype not in only:
            continue
        if t is None:
            out.append(status_record(impl.name, impl.family, impl.profile, versions, device, dtype, cid, "not_run",
                                     f"no generated case exercised this clause in {dtype} ({result.cases} cases)"))
            continue
        shr, blocked_by = result.shrunk.get((cid, dtype)), result.blocked.get((cid, dtype), ())
        path = None
        if verdict(t, clause.level, blocked_by) in ("fail", "warn"):
            path = saved_reproducer(write_repro, *shown(t, shr))
        out.append(tally_record(impl, device, versions, dtype, cid, t, shr, seed, path, clause.level, blocked_by))
    return out


def audit_entry(clause, result, seed, write_repro=None) -> tuple[str, dict]:
    """One clause of a user audit, judged over every dtype it ran in: (its status, its entry in
    the AuditReport list AUDIT_LISTS names). A bnconf error outranks a finding, a finding
    outranks being blocked; of several failing dtypes the smallest failing case is shown."""
    key = clause.id
    tallies = [(d, t) for (cid, d), t in result.tallies.items() if cid == key]
    status = {d: verdict(t, clause.level, result.blocked.get((key, d), ())) for d, t in tallies}
    errored = [(d, t) for d, t in tallies if status[d] == "error"]
    failing = [(d, t) for d, t in tallies if status[d] in ("fail", "warn")]
    if errored:
        _, t = errored[0]
        return "error", {"clause": key, "title": clause.title, "message": t.error.note,
                         "traceback": t.error.error, "example": t.error_case.to_json(),
                         "errored_cases": sum(tt.errors for _, tt in errored)}
    if failing:
        dtype, t = min(failing, key=lambda dt: dt[1].failing_case.n_per_channel * dt[1].failing_case.num_features)
        case, outcome = shown(t, result.shrunk.get((key, dtype)))
        v = {"clause": key, "title": clause.title, "level": clause.level, "message": message(outcome),
             "example": case.to_json(), "seed": seed,
             "failed_cases": sum(tt.failed for _, tt in failing), "cases": sum(tt.cases for _, tt in tallies)}
        if write_repro is not None:
            v["reproducer"] = saved_reproducer(write_repro, case, outcome)
        return violation_status(clause.level), v
    if "blocked" in status.values():
        roots = sorted({r for d, t in tallies if t.failed for r in result.blocked.get((key, d), ())})
        return "blocked", {"clause": key, "title": clause.title, "blocked_by": roots,
                           "failed_cases": sum(t.failed for _, t in tallies)}
    if tallies:
        return "pass", {"clause": key, "cases": sum(t.cases for _, t in tallies)}
    return "not_run", {"clause": key, "reason": f"no case of {result.cases} exercised it"}


def blocks_by_root(blocked, where=lambda b: ()) -> dict:
    """(*where(b), root) -> the clauses that fail only because root does, from the blocked
    entries or records `blocked` (each with its blocked_by): what a finding "blocks"."""
    out: dict = {}
    for b in blocked:
        for root in b.get("blocked_by", ()):
            out.setdefault((*where(b), root), []).append(b["clause"])
    return out


def audit_report_records(rep, seed) -> list[dict]:
    """A user audit's clauses as records (what the pytest items read): one per clause, dtype "*"."""
    out = []
    for status in ("fail", "warn", "error"):
        for v in getattr(rep, AUDIT_LISTS[status]):
            out.append({"implementation": rep.target, "clause": v["clause"], "status": status, "device": "cpu",
                        "dtype": "*", "note": v["message"], "case": v["example"], "seed": seed,
                        "traceback": v.get("traceback")})
    for b in rep.blocked:
        out.append({"implementation": rep.target, "clause": b["clause"], "status": "blocked", "device": "cpu",
                    "dtype": "*", "blocked_by": b["blocked_by"], "note": ""})
    for p in rep.passed:
        out.append({"implementation": rep.target, "clause": p["clause"], "status": "pass"})
    for x in rep.not_exercised:
        out.append({"implementation": rep.target, "clause": x["clause"], "status": "not_run", "note": x["reason"]})
    return out


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

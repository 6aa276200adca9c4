"""Audit a hand-written BN (`bnconf audit`, `bnconf.audit`): the shared cases against one
implementation, each clause's verdict with a failing case, its reproducer and what it blocks."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bnconf.adapters.numpy_protocol import CALL_TIMEOUT_S
from bnconf.report import reproducers as repro
from bnconf.results.fingerprint import fingerprint as measure
from bnconf.running.audit import audit_implementation, missing_capability, run_case
from bnconf.running.targets import make_implementation
from bnconf.spec.loader import get_spec


@dataclass
class AuditReport:
    """verdict: "violates" (a MUST clause fails), "error" (bnconf could not judge a clause: a
    bug of ours, with its traceback), else "conforms" (SHOULD clauses not met are warnings)."""
    target: str
    profile: str
    verdict: str
    violations: list = field(default_factory=list)   # MUST clauses not met
    warnings: list = field(default_factory=list)     # SHOULD clauses not met
    errors: list = field(default_factory=list)       # clauses bnconf failed to judge
    blocked: list = field(default_factory=list)      # clauses failing only because a root clause fails
    passed: list = field(default_factory=list)
    not_exercised: list = field(default_factory=list)
    fingerprint: dict = field(default_factory=dict)
    cases: int = 0
    seconds: float = 0.0
    stdout: str = ""

    def to_json(self) -> dict:
        return {"target": self.target, "profile": self.profile, "verdict": self.verdict,
                "violations": self.violations, "warnings": self.warnings, "errors": self.errors,
                "blocked": self.blocked,
                "passed": self.passed, "not_exercised": self.not_exercised,
                "fingerprint": self.fingerprint, "cases": self.cases, "seconds": round(self.seconds, 3)}


def audit(target, profile, *, kind="numpy", max_examples=None, seed=0, spec_path=None, repro_dir=None,
          shrink_budget=25, fingerprint=True, timeout=CALL_TIMEOUT_S, impl=None, progress=None,
          quota=100) -> AuditReport:
    """Run the shared cases, at least `quota` per clause that applies (max_examples caps
    the total); returns an AuditReport."""
    spec = get_spec(spec_path)
    prof = spec.profile(profile)
    impl = impl or make_implementation(target, profile, kind, timeout)
    t0 = time.perf_counter()
    result = audit_implementation(impl, "cpu", spec, prof, max_examples=max_examples, seed=seed,
                                  shrink_budget=shrink_budget, progress=progress, quota=quota)
    rep = AuditReport(target, profile, "conforms", cases=result.cases)
    by_clause: dict = {}
    for (cid, dtype), t in result.tallies.items():
        by_clause.setdefault(cid, []).append((dtype, t))
    for clause in spec.clauses_for(prof):
        if clause.planned:
            continue
        lacking = missing_capability(impl.capabilities, clause.needs)
        if lacking:
            rep.not_exercised.append({"clause": clause.id, "reason": f"the protocol has no {lacking!r}"})
            continue
        tallies = by_clause.get(clause.id, [])
        errored = [(d, t) for d, t in tallies if t.errors]
        failing = [(d, t) for d, t in tallies if t.failed and (clause.id, d) not in result.blocked]
        roots = sorted({r for d, t in tallies if t.failed for r in result.blocked.get((clause.id, d), ())})
        if roots and not failing and not errored:
            rep.blocked.append({"clause": clause.id, "title": clause.title, "blocked_by": roots,
                                "failed_cases": sum(t.failed for _, t in tallies)})
            continue
        if errored:
            dtype, t = errored[0]
            rep.errors.append({"clause": clause.id, "title": clause.title, "message": t.error.note,
                               "traceback": t.error.error, "example": t.error_case.to_json(),
                               "errored_cases": sum(tt.errors for _, tt in errored)})
        elif failing:
            dtype, t = min(failing, key=lambda dt: dt[1].failing_case.n_per_channel * dt[1].failing_case.num_features)
            case, outcome = result.shrunk.get((clause.id, dtype)) or (t.failing_case, t.failing)
            if outcome is None:
                case, outcome = t.failing_case, t.failing
            msg = outcome.note or ""
            if outcome.comparison is not None:
                msg = (msg + "; " if msg else "") + outcome.comparison.describe()
            v = {"clause": clause.id, "title": clause.title, "level": clause.level, "message": msg,
                 "example": case.to_json(), "seed": seed,
                 "failed_cases": sum(tt.failed for _, tt in failing), "cases": sum(tt.cases for _, tt in tallies)}
            if repro_dir:
                try:
                    v["reproducer"] = repro.write(Path(repro_dir), impl, "cpu", clause, case, outcome, run_case)
                except Exception as exc:
                    v["reproducer"] = f"(not written: {exc})"
            (rep.violations if clause.level == "MUST" else rep.warnings).append(v)
        elif tallies:
            rep.passed.append({"clause": clause.id, "cases": sum(t.cases for _, t in tallies)})
        else:
            rep.not_exercised.append({"clause": clause.id, "reason": f"no case of {result.cases} exercised it"})
    for v in rep.violations + rep.warnings:
        v["blocks"] = [b["clause"] for b in rep.blocked if v["clause"] in b["blocked_by"]]
    rep.verdict = "violates" if rep.violations else "error" if rep.errors else "conforms"
    if fingerprint:
        try:
            rep.fingerprint = measure(impl, default_momentum=False, default_eps=False)
        except Exception as exc:
            rep.fingerprint = {"error": f"{type(exc).__name__}: {exc}"}
        rep.fingerprint.setdefault("default_momentum", None)  # not probed for user targets
        rep.fingerprint.setdefault("default_eps", None)
    rep.seconds = time.perf_counter() - t0
    return rep

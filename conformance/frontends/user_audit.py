"""Audit a hand-written BN (`bnconf audit`, `bnconf.audit`): the shared cases against one
implementation, each clause's verdict with a failing case, its reproducer and what it blocks."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bnconf.adapters.numpy_protocol import CALL_TIMEOUT_S
from bnconf.report import reproducers as repro
from bnconf.results import records as rec_mod
from bnconf.results.fingerprint import fingerprint as measure
from bnconf.cases.capabilities import missing_capability
from bnconf.running.audit import audit_implementation, evaluate, run_case
from bnconf.running.isolated import make_implementation
from bnconf.running.scope import find_scope
from bnconf.running.targets import TargetError
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
    scope: dict = field(default_factory=dict)         # running/scope.py: what was audited, what was refused
    cases: int = 0
    seconds: float = 0.0
    stdout: str = ""

    def to_json(self) -> dict:
        return {"target": self.target, "profile": self.profile, "verdict": self.verdict,
                "violations": self.violations, "warnings": self.warnings, "errors": self.errors,
                "blocked": self.blocked,
                "passed": self.passed, "not_exercised": self.not_exercised,
                "fingerprint": self.fingerprint, "scope": self.scope, "cases": self.cases, "seconds": round(self.seconds, 3)}


def audit(target, profile, *, kind="numpy", max_examples=None, seed=0, spec_path=None, repro_dir=None,
          shrink_budget=25, fingerprint=True, timeout=CALL_TIMEOUT_S, impl=None, progress=None,
          quota=100, layouts=None, call=None, init=None, returns=None, backward=None) -> AuditReport:
    """Run the shared cases, at least `quota` per clause that applies (max_examples caps
    the total), within the code's scope (layouts: names declared by the user, e.g. ("NC",
    "NCHW"); None: every candidate layout the code does not refuse); call / init / returns / backward: how
    bnconf calls the code (running/call_templates.py); returns an AuditReport."""
    spec = get_spec(spec_path)
    prof = spec.profile(profile)
    impl = impl or make_implementation(target, profile, kind, timeout, call=call, init=init, returns=returns,
                                       backward=backward)
    t0 = time.perf_counter()
    applicable = {c.id for c in spec.clauses_for(prof) if not c.planned}

    def judge(case):   # a probe that raised is judged once, as the audit judges it
        outcomes, trace, _ = evaluate(impl, case, "cpu", spec, prof, applicable)
        return trace, outcomes
    caps, scope = find_scope(impl, tuple(layouts) if layouts else None, judge)
    if caps is None:
        raise TargetError(f"{target}: nothing in scope: " + "; ".join(
            f"{o['what']}: {o['message']}" for o in scope.out_of_scope))
    impl.capabilities = caps
    result = audit_implementation(impl, "cpu", spec, prof, max_examples=max_examples, seed=seed,
                                  shrink_budget=shrink_budget, progress=progress, quota=quota,
                                  judged=scope.judged, pool_first=scope.probed)
    rep = AuditReport(target, profile, "conforms", cases=result.cases, scope=scope.to_json())
    for clause in spec.clauses_for(prof):
        if clause.planned:
            continue
        lacking = missing_capability(impl.capabilities, clause.needs)
        if lacking:
            rep.not_exercised.append({"clause": clause.id, "reason": f"the protocol has no {lacking!r}"})
            continue
        write = None if not repro_dir else (lambda case, outcome, clause=clause: repro.write(
            Path(repro_dir), impl, "cpu", clause, case, outcome, run_case))
        status, entry = rec_mod.audit_entry(clause, result, seed, write)
        getattr(rep, rec_mod.AUDIT_LISTS[status]).append(entry)
    blocks = rec_mod.blocks_by_root(rep.blocked)
    for v in rep.violations + rep.warnings:
        v["blocks"] = blocks.get((v["clause"],), [])
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

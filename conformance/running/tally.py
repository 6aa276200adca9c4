"""What an audit keeps of its cases: per (clause, dtype), how many passed and failed, the
worst passing comparison, the smallest failing case per kind of deviation, and what the
failures measured (the evidence blocking.py re-judges with)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnconf.cases.case import Case
from bnconf.checks.context import Outcome


@dataclass
class ClauseTally:
    cases: int = 0
    passed: int = 0
    failed: int = 0
    worst: Outcome | None = None        # worst passing comparison (how close to the bound)
    failing: Outcome | None = None      # the smallest failing case's outcome
    failing_case: Case | None = None
    measured: dict = field(default_factory=dict)  # convention -> {value: count}
    samples: list = field(default_factory=list)   # (kappa, ratio) per case, for the accuracy plots
    kinds: dict = field(default_factory=dict)     # deviation kind -> [failed cases, the smallest of them]
    failed_at: set = field(default_factory=set)   # numbers of the cases that failed (root causes: blocking.py)
    fail_measured: dict = field(default_factory=dict)   # conventions the failures measured, first value each
    kind_measured: dict = field(default_factory=dict)   # deviation kind -> what its first failure measured
    kind_raised: dict = field(default_factory=dict)     # deviation kind -> the exceptions its failures raised
                                                        # (None: one that did not raise)
    errors: int = 0                     # cases on which bnconf itself failed to judge the clause
    error: Outcome | None = None        # the first of them (its traceback)
    error_case: Case | None = None

    def add(self, outcomes: list, case: Case, index: int = 0):
        """One case's outcomes for this clause: the case counts once, failed if any failed;
        a case bnconf could not judge (a check crashed) is an error, never a pass or a fail."""
        self.cases += 1
        crashed = next((o for o in outcomes if o.error), None)
        if crashed is not None:
            self.errors += 1
            if self.error is None:
                self.error, self.error_case = crashed, case
            return
        for o in outcomes:
            if o.comparison is not None and len(self.samples) < 400:
                r = o.comparison.ratio
                self.samples.append((float(case.kappa), float(r) if np.isfinite(r) else 1e9))
            for k, v in o.measured.items():
                self.measured.setdefault(k, {}).setdefault(repr(v), 0)
                self.measured[k][repr(v)] += 1
        bad = next((o for o in outcomes if not o.ok), None)
        if bad is not None:
            self.failed_at.add(index)
            for key, value in bad.measured.items():
                self.fail_measured.setdefault(key, value)
            self.kind_measured.setdefault(bad.kind, dict(bad.measured))
            self.kind_raised.setdefault(bad.kind, set()).add(bad.raised)
            k = self.kinds.setdefault(bad.kind, [0, case])
            k[0] += 1
            if case_size(case) < case_size(k[1]):
                k[1] = case
        if bad is None:
            self.passed += 1
            for o in outcomes:
                if o.comparison is not None and (self.worst is None or self.worst.comparison is None
                                                 or o.comparison.ratio > self.worst.comparison.ratio):
                    self.worst = o
        else:
            self.failed += 1
            if self.failing_case is None or case_size(case) < case_size(self.failing_case):
                self.failing, self.failing_case = bad, case


@dataclass
class AuditResult:
    tallies: dict                      # (clause, dtype) -> ClauseTally
    cases: int
    seconds: float
    errors: list                       # harness-level problems (never the implementation's)
    shrunk: dict = field(default_factory=dict)   # (clause, dtype) -> (case, outcome)
    first_failure_s: float | None = None         # seconds until the first failing outcome
    first_failure_case: int | None = None        # how many cases it took
    quota: dict | None = None                    # the scheduler's counts and given-up clauses
    sequence: str = ""                           # sha256 of the generated cases, in order
    blocked: dict = field(default_factory=dict)  # (clause, dtype) -> the root clauses whose failure explains it


def case_size(case: Case) -> tuple:
    return (int(np.prod(case.shape)), case.steps, case.num_features, case.kappa)

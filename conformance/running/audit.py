"""Audit one implementation on one device: spec -> case -> (oracle, implementation) ->
comparison -> finding. Cases come from the shared hypothesis strategies; each case runs
the implementation once (plus the relation calls) and is checked against every clause
that applies to the implementation's profile.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from bnconf.checks import single as checks_mod
from bnconf.cases.case import Case, materialize
from bnconf.checks.single import Ctx, Outcome

# Set by the CLI's SIGINT handler: Python drops an exception raised inside a gc callback
# ("Exception ignored in gc_callback"), so the next case stops the explorer instead.
INTERRUPTED = threading.Event()

# Cases per clause per implementation (the fast tier), and the cap on all cases as a
# multiple of it: a clause the scheduler cannot reach never makes a run endless.
DEFAULT_QUOTA = 100
CAP_PER_QUOTA = 20


def cap_for(quota: int | None, max_examples: int | None) -> int:
    return max_examples if max_examples else CAP_PER_QUOTA * (quota or DEFAULT_QUOTA)


def missing_capability(caps: dict, needs) -> str | None:
    """The first of a clause's `needs` (spec/batchnorm.yaml) that the implementation lacks."""
    return next((n for n in needs if not capability_ok(caps, n)), None)


def capability_ok(caps: dict, need) -> bool:
    """need: one capability, or a tuple of them that are all needed (BN-INIT judges the initial
    running statistics: without them only a failing output could show it, never a pass)."""
    if isinstance(need, tuple):
        return all(capability_ok(caps, n) for n in need)
    if need == "low_precision":
        return bool({"float16", "bfloat16"} & set(caps["dtypes"]))
    if need == "float64":
        return "float64" in caps["dtypes"]
    if need == "eval_without_stats":   # an API may require running statistics in eval (F.batch_norm)
        return bool(caps.get("eval_without_stats", True))
    if need == "no_running_stats":
        return bool(caps.get("no_running_stats", False) or not caps.get("running_stats", True))
    if need == "eval_mode":
        return caps.get("grads", False) and (caps.get("running_stats", True) or caps.get("no_running_stats", False)
                                             or caps.get("eval_batch_stats", False))
    return bool(caps.get(need, False))


def build_params(case: Case, arrays: dict) -> dict:
    """What the adapter is told: plain values and arrays, nothing about the spec."""
    return {
        "num_features": case.num_features, "feature_axis": case.feature_axis, "rank": case.rank,
        "dtype": case.dtype, "momentum": case.momentum, "eps": case.eps, "affine": case.affine,
        "weight": arrays.get("weight"), "bias": arrays.get("bias"),
        "track_running_stats": case.track_running_stats, "memory_format": case.memory_format,
    }


def run_case(impl, case: Case, device: str):
    """(arrays, params, trace, relations, post) for one case; relations and post are the extra
    inputs the relation checks made, built once here and handed to the checks."""
    from bnconf.running.trace import run_trace
    arrays = materialize(case)
    params = build_params(case, arrays)
    relations = checks_mod.relation_inputs(case, arrays)
    extra = []
    for name, mode, x, over in relations:
        passed = {k: v for k, v in (over or {}).items() if not k.startswith("_")}
        extra.append((name, mode, x, dict(params, **passed) if passed else None))
    post = checks_mod.post_eval_inputs(case, arrays)
    trace = run_trace(impl, params, arrays, case.steps, device, grads=case.grads, extra=extra, post=post)
    return arrays, params, trace, relations, post


def evaluate(impl, case: Case, device: str, spec, profile, applicable: set, nested: bool = False,
             compute: str | None = None, emitted: dict | None = None):
    """The case's outcomes; `compute` judges it by the error model of another compute precision
    (a precision root's re-judgement, blocking.py)."""
    import warnings
    with np.errstate(all="ignore"), warnings.catch_warnings():  # NaN/Inf/empty cases are deliberate
        warnings.simplefilter("ignore")
        arrays, params, trace, relations, _ = run_case(impl, case, device)
        ctx = Ctx(case, arrays, trace, profile, spec, applicable)
        if compute is not None:
            ctx.model = ctx.model.with_compute(compute)
        ctx.relations = {name: (x, over) for name, _, x, over in relations}
        if not nested:
            ctx.rerun = lambda variant: evaluate(impl, variant, device, spec, profile, applicable, nested=True,
                                                 emitted=emitted)[0]
        return checks_mod.run_checks(ctx, emitted), trace, arrays


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
            k = self.kinds.setdefault(bad.kind, [0, case])
            k[0] += 1
            if _size(case) < _size(k[1]):
                k[1] = case
        if bad is None:
            self.passed += 1
            for o in outcomes:
                if o.comparison is not None and (self.worst is None or self.worst.comparison is None
                                                 or o.comparison.ratio > self.worst.comparison.ratio):
                    self.worst = o
        else:
            self.failed += 1
            if self.failing_case is None or _size(case) < _size(self.failing_case):
                self.failing, self.failing_case = bad, case


def _size(case: Case) -> tuple:
    return (int(np.prod(case.shape)), case.steps, case.num_features, case.kappa)


def greedy_shrink(case, candidates, fails, budget: int):
    """Greedy shrink of a failing case: take the first smaller candidate that still fails,
    until none does or the budget is spent. `fails(case)` returns the failing outcome or
    None; deterministic and cheap; returns (case, outcome)."""
    best, best_out = case, fails(case)
    if best_out is None:
        return case, None
    tried, improved = 0, True
    while improved and tried < budget:
        improved = False
        for cand in candidates(best):
            tried += 1
            if tried > budget:
                break
            o = fails(cand)
            if o is not None:
                best, best_out, improved = cand, o, True
                break
    return best, best_out


def shrink(impl, case: Case, clause: str, device, spec, profile, applicable, budget: int = 40, pool=None):
    """Smaller shapes, fewer steps, simpler values, while the clause still fails. With a layout
    pool (implementations that compile per shape) the shapes tried are the pool's smaller
    layouts, already compiled: a halved shape would cost a compilation (~0.1 s) per attempt."""
    def fails(c):
        try:
            outs, _, _ = evaluate(impl, c, device, spec, profile, applicable)
        except Exception:
            return None
        return next((o for o in outs if o.clause == clause and not o.ok and not o.error), None)
    return greedy_shrink(case, _candidates if pool is None else _pool_candidates(pool), fails, budget)


def _pool_candidates(pool):
    def candidates(c: Case):
        size = int(np.prod(c.shape))
        smaller = sorted((s for s, fa, dt in pool if fa == c.feature_axis and dt == c.dtype
                          and int(np.prod(s)) < size and len(s) == len(c.shape)), key=lambda s: int(np.prod(s)))
        for s in smaller:
            yield c.replace(shape=tuple(s))
        for cand in _candidates(c):
            if cand.shape == c.shape:
                yield cand
    return candidates


def _candidates(c: Case):
    shape = list(c.shape)
    for a in range(len(shape)):
        if a == c.feature_axis or shape[a] <= 1:
            continue
        for new in (max(shape[a] // 2, 1), shape[a] - 1):
            s = shape.copy()
            s[a] = new
            if int(np.prod(s)) // max(c.num_features, 1) >= min(2, c.n_per_channel) or c.n_per_channel <= 1:
                yield c.replace(shape=tuple(s))
    if shape[c.feature_axis] > 1:
        s = shape.copy()
        s[c.feature_axis] = max(1, shape[c.feature_axis] // 2)
        yield c.replace(shape=tuple(s), special_channel=0)
    if c.steps > 1:
        yield c.replace(steps=c.steps - 1)
    if c.log_scale != 0.0:
        yield c.replace(log_scale=0.0)
    if c.kappa > 0:
        from bnconf.cases.strategies import KAPPAS
        lower = [k for k in KAPPAS if k < c.kappa]
        if lower:
            yield c.replace(kappa=lower[-1])
    if c.affine == "random":
        yield c.replace(affine="default")
    if c.memory_format != "contiguous":
        yield c.replace(memory_format="contiguous")
    if c.seed != 0:
        yield c.replace(seed=0)


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


def seal_generator() -> None:
    """Make hypothesis draw from the seed alone. Hypothesis (6.13x on) mixes into its draws,
    with probability 0.05 per choice, constants it reads from the source of every "local"
    module imported so far (the user's BN file, bnconf itself in an editable install), and
    caches them in ./.hypothesis/constants: the cases of a seed would then depend on the
    checkout, on what was imported before and on that cache. bnconf's strategies already aim
    at the values that matter (KAPPAS, EPS_VALUES, the degenerate shapes), so the pool is
    emptied. Private API: where a hypothesis version lacks it, there is nothing to seal."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:
        return
    if hasattr(providers, "_get_local_constants"):
        empty = Constants()
        providers._get_local_constants = lambda: empty


class _Enough(BaseException):
    """Every clause has its quota: ends the hypothesis run at once (not an Exception, so
    hypothesis neither reports nor replays it)."""


def explore(strategy, pinned, run, *, max_examples, seed, progress=None, deadline_s=None, stop=None,
            scheduler=None, aimed=None, round_size=20):
    """Run `run(case) -> outcomes` on the pinned cases, then on cases drawn from `strategy`
    (hypothesis, seeded, no example database); tally every outcome per (clause, dtype), a
    case counting once per clause. Returns (tallies, cases run, seconds, (seconds to the
    first failure, its case number), sha256 of the cases in the order they ran): two runs of
    one seed must give the same digest whatever the implementation returned.

    With a scheduler (quota.py) the run goes on in rounds of `round_size` cases, each a
    seeded hypothesis run of `aimed(focus)` at the clauses short of their quota (a strategy
    must not change under hypothesis's feet, so the aim changes between rounds), until none
    is short; max_examples is then the cap on all cases."""
    from hypothesis import HealthCheck, Phase, example, given, settings
    from hypothesis import seed as hseed

    import hashlib
    import json
    seal_generator()
    tallies: dict = {}
    count = [0]
    first = [None, None]
    digest = hashlib.sha256()
    t0 = time.perf_counter()
    aim: tuple = ()

    def body(case):
        if INTERRUPTED.is_set():   # a Ctrl-C whose KeyboardInterrupt was swallowed (raised in a gc callback)
            raise KeyboardInterrupt
        if (stop and stop()) or (deadline_s and time.perf_counter() - t0 > deadline_s):
            raise _Enough()
        digest.update(json.dumps(case.to_json(), sort_keys=True).encode() + b"\n")
        outs = run(case)
        count[0] += 1
        per_clause: dict = {}
        for o in outs:
            per_clause.setdefault(o.clause, []).append(o)
            if not o.ok and not o.error and first[0] is None:
                first[0], first[1] = time.perf_counter() - t0, count[0]
        for clause, group in per_clause.items():
            tallies.setdefault((clause, case.dtype), ClauseTally()).add(group, case, count[0])
        if progress:
            progress(count[0])
        if scheduler is not None:
            scheduler.observe(case, aim)
            if scheduler.done() or (aim and all(scheduler.counts[c] >= scheduler.quota for c in aim)):
                raise _Enough()

    def one_run(strat, examples, n, run_seed):
        if n <= 0 and not examples:
            return True
        test = given(strat)(body)
        for c in reversed(examples):
            test = example(c)(test)
        test = settings(max_examples=max(n, 1), database=None, deadline=None, derandomize=False,
                        phases=[Phase.explicit] + ([Phase.generate] if n > 0 else []),
                        suppress_health_check=list(HealthCheck), print_blob=False)(test)
        try:
            hseed(run_seed)(test)()
        except _Enough:
            return not ((stop and stop()) or (deadline_s and time.perf_counter() - t0 > deadline_s))
        return True

    if scheduler is None:
        one_run(strategy, pinned, max_examples, seed)
    else:
        rng = np.random.default_rng([seed, 0x5C])
        going = one_run(strategy, pinned, 0, seed)          # the pinned probes first
        r = 0
        while going and not scheduler.done() and count[0] < max_examples:
            r += 1
            focus, aim = scheduler.choose(lambda n: int(rng.integers(n)))
            going = one_run(aimed(focus) if focus else strategy, [],
                            min(round_size, max_examples - count[0]), seed * 1000 + r)
    return tallies, count[0], time.perf_counter() - t0, tuple(first), digest.hexdigest()


def aimed_strategies(make):
    """focus -> strategy, built once per distinct focus (a run aims at a few dozen)."""
    cache: dict = {}

    def get(focus):
        key = tuple(sorted((k, tuple(v)) for k, v in focus.items()))
        if key not in cache:
            cache[key] = make(focus)
        return cache[key]
    return get


def audit_implementation(impl, device, spec, profile, *, max_examples=None, seed=0, shrink_budget=30,
                         progress=None, deadline_s=None, quota=DEFAULT_QUOTA, emitted=None) -> AuditResult:
    """Explore cases with hypothesis, tally every outcome, shrink each failing clause's case.

    quota: at least this many cases per applicable clause (aimed with quota.py, capped at
    max_examples cases in all, default CAP_PER_QUOTA x quota); None draws max_examples
    cases blindly. emitted: collects check name -> clause IDs it emitted (the lint)."""
    max_examples = cap_for(quota, max_examples)
    from bnconf.cases.quota import QuotaScheduler
    from bnconf.cases.strategies import cases, layout_pool, meets, merge_focus, pinned_for

    caps = impl.capabilities
    applicable = {c.id for c in spec.clauses_for(profile) if not c.planned}
    # implementations that compile per input shape draw layouts from a finite pool (see layout_pool)
    pool = layout_pool(caps, seed, caps["layout_pool"]) if caps.get("layout_pool") else None
    scheduler = None
    if quota:
        foci = {cid: spec.clauses[cid].focus for cid in sorted(applicable)
                if not missing_capability(caps, spec.clauses[cid].needs)}
        scheduler = QuotaScheduler(foci, quota, merge_focus, meets)
    t0 = time.perf_counter()
    tallies, count, _, first, sequence = explore(
        cases(caps, pool=pool), pinned_for(caps),
        lambda case: evaluate(impl, case, device, spec, profile, applicable, emitted=emitted)[0],
        max_examples=max_examples, seed=seed, progress=progress, deadline_s=deadline_s, scheduler=scheduler,
        aimed=aimed_strategies(lambda focus: cases(caps, focus=focus, pool=pool)))
    from bnconf.checks.blocking import find_blocked
    blocked = find_blocked(tallies, spec, profile,
                           lambda case, variant, compute=None: evaluate(impl, case, device, spec, variant, applicable,
                                                                        compute=compute)[0])
    shrunk = {}
    for key, t in tallies.items():
        if t.failed and t.failing_case is not None and shrink_budget > 0 and key not in blocked:
            shrunk[key] = shrink(impl, t.failing_case, key[0], device, spec, profile, applicable, shrink_budget,
                                 pool=pool)
    return AuditResult(tallies, count, time.perf_counter() - t0, [], shrunk, first[0], first[1],
                       scheduler.summary() if scheduler else None, sequence, blocked)

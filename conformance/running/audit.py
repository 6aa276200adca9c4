"""Audit one implementation on one device: spec -> case -> (oracle, implementation) ->
comparison -> finding. Cases come from the shared hypothesis strategies; each case runs
the implementation once (plus the relation calls) and is checked against every clause
that applies to the implementation's profile.
"""
from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np

from bnconf.cases.capabilities import missing_capability
from bnconf.cases.case import Case, materialize
from bnconf.cases.focus import meets, merge_focus
from bnconf.cases.pinned import pinned_for
from bnconf.cases.quota import QuotaScheduler
from bnconf.cases.strategies import cases, fits, layout_pool
from bnconf.checks.blocking import find_blocked
from bnconf.checks.context import Ctx
from bnconf.checks.registry import run_checks
from bnconf.checks.relations import post_eval_inputs, relation_inputs
from bnconf.running.explore import aimed_strategies, explore
from bnconf.running.shrink import candidates, greedy_shrink, pool_candidates
from bnconf.running.tally import AuditResult
from bnconf.running.trace import probes_for, run_trace

# Cases per clause per implementation (the fast tier), and the cap on all cases as a
# multiple of it: a clause the scheduler cannot reach never makes a run endless.
DEFAULT_QUOTA = 100
CAP_PER_QUOTA = 20


def cap_for(quota: int | None, max_examples: int | None) -> int:
    return max_examples if max_examples else CAP_PER_QUOTA * (quota or DEFAULT_QUOTA)


def build_params(case: Case, arrays: dict) -> dict:
    """What the adapter is told: plain values and arrays, nothing about the spec."""
    return {
        "num_features": case.num_features, "feature_axis": case.feature_axis, "rank": case.rank,
        "dtype": case.dtype, "momentum": case.momentum, "eps": case.eps, "affine": case.affine,
        "weight": arrays.get("weight"), "bias": arrays.get("bias"),
        "track_running_stats": case.track_running_stats, "memory_format": case.memory_format,
    }


def judged_by_probes(case: Case) -> bool:
    """The fresh-layer probes' clauses (second derivatives, freeze, reset, mask, renorm) judge
    only cases with a batch variance and no NaN/Inf/constant channel: elsewhere their calls are
    not made (on a JIT backend each is a compilation)."""
    return case.special == "none" and case.n_per_channel > 1 and case.shape[0] > 0


def run_case(impl, case: Case, device: str):
    """(arrays, params, trace, relations, post) for one case; relations and post are the extra
    inputs the relation checks made, built once here and handed to the checks."""
    arrays = materialize(case)
    params = build_params(case, arrays)
    relations = relation_inputs(case, arrays)
    extra = []
    for name, mode, x, over in relations:
        passed = {k: v for k, v in (over or {}).items() if not k.startswith("_")}
        extra.append((name, mode, x, dict(params, **passed) if passed else None))
    post = post_eval_inputs(case, arrays)
    trace = run_trace(impl, params, arrays, case.steps, device, grads=case.grads, extra=extra, post=post,
                      probes=probes_for(impl.capabilities, judged_by_probes(case)))
    return arrays, params, trace, relations, post


def evaluate(impl, case: Case, device: str, spec, profile, applicable: set, nested: bool = False,
             compute: str | None = None, emitted: dict | None = None, timing=None):
    """The case's outcomes; `compute` judges it by the error model of another compute precision
    (a precision root's re-judgement, blocking.py). timing: a callable giving a context manager
    the checks of this case run inside (`bnconf bench` splits check time from framework time);
    the checks' own re-runs of the implementation run inside it too."""
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
        with (timing or contextlib.nullcontext)():
            outcomes = run_checks(ctx, emitted)
        return outcomes, trace, arrays


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
    simpler = candidates if pool is None else pool_candidates(pool)

    def within(c):   # a simplification the implementation does not offer is no smaller case of its failure
        return (cand for cand in simpler(c) if fits(cand, impl.capabilities))
    return greedy_shrink(case, within, fails, budget)


def audit_implementation(impl, device, spec, profile, *, max_examples=None, seed=0, shrink_budget=30,
                         progress=None, deadline_s=None, quota=DEFAULT_QUOTA, emitted=None,
                         timing=None, judged=(), pool_first=()) -> AuditResult:
    """Explore cases with hypothesis, tally every outcome, shrink each failing clause's case.

    quota: at least this many cases per applicable clause (aimed with quota.py, capped at
    max_examples cases in all, default CAP_PER_QUOTA x quota); None draws max_examples
    cases blindly. emitted: collects check name -> clause IDs it emitted (the lint). timing:
    see evaluate. judged: (case, outcomes) already judged (the scope probes that raised,
    running/scope.py): tallied first, as they were, not run again. pool_first: layouts a layout
    pool starts with (what the scope probes compiled)."""
    max_examples = cap_for(quota, max_examples)
    caps = impl.capabilities
    applicable = {c.id for c in spec.clauses_for(profile) if not c.planned}
    # implementations that compile per input shape draw layouts from a finite pool (see layout_pool)
    pool = layout_pool(caps, seed, caps.layout_pool, first=pool_first) if caps.layout_pool else None
    scheduler = None
    if quota:
        foci = {cid: spec.clauses[cid].focus for cid in sorted(applicable)
                if not missing_capability(caps, spec.clauses[cid].needs)}
        scheduler = QuotaScheduler(foci, quota, merge_focus, meets)
    t0 = time.perf_counter()
    done = list(judged)

    def run(case):
        if done and done[0][0] == case:
            return done.pop(0)[1]
        return evaluate(impl, case, device, spec, profile, applicable, emitted=emitted, timing=timing)[0]
    tallies, count, _, first, sequence = explore(
        cases(caps, pool=pool), [c for c, _ in judged] + list(pinned_for(caps)), run,
        max_examples=max_examples, seed=seed, progress=progress, deadline_s=deadline_s, scheduler=scheduler,
        aimed=aimed_strategies(lambda focus: cases(caps, focus=focus, pool=pool)))
    blocked = find_blocked(tallies, spec, profile,
                           lambda case, variant, compute=None: evaluate(impl, case, device, spec, variant, applicable,
                                                                        compute=compute, timing=timing)[0])
    shrunk = {}
    for key, t in tallies.items():
        if t.failed and t.failing_case is not None and shrink_budget > 0 and key not in blocked:
            shrunk[key] = shrink(impl, t.failing_case, key[0], device, spec, profile, applicable, shrink_budget,
                                 pool=pool)
    return AuditResult(tallies, count, time.perf_counter() - t0, [], shrunk, first[0], first[1],
                       scheduler.summary() if scheduler else None, sequence, blocked)

"""Audit one data-parallel wrapper (an engine running a BN layer on R replicas):
spec -> SyncCase -> (oracle on the global batch, the wrapper's step) -> comparison -> finding.

The single-device engine's tallies, records and known-deviation handling are reused; what
differs is the case (per-replica arrays), the call (one step on R replicas at once) and
the checks (checks/sync.py). The adapter bounds each step in time itself (a hung
collective comes back as an error, its processes killed); the runner bounds the whole.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bnconf.running.audit import DEFAULT_QUOTA, AuditResult, aimed_strategies, cap_for, explore, greedy_shrink
from bnconf.cases.capabilities import missing_capability
from bnconf.cases.focus import meets, merge_focus
from bnconf.cases.pinned import sync_pinned_for
from bnconf.cases.quota import QuotaScheduler
from bnconf.cases.sync_case import SyncCase, materialize
from bnconf.cases.sync_strategies import sync_cases, sync_layout_pool
from bnconf.checks.context import SyncCtx
from bnconf.checks.blocking import find_blocked
from bnconf.checks.sync import run_sync_checks
from bnconf.results.records import message
from bnconf.running.registry import find
from bnconf.spec.loader import get_spec

# Single-device clauses a cross-replica deviation can be attributed to (checks/sync.py).
ATTRIBUTED = ("BN-VAR-STABLE", "BN-DTYPE-F64")


class SyncUnsupported(Exception):
    """The engine refuses the configuration outright (its own message), e.g. SyncBatchNorm
    on CPU tensors, or NCCL with several ranks on one GPU."""


def build_params(case: SyncCase, arrays: dict) -> dict:
    """What the adapter is told: plain values and arrays, nothing about the spec."""
    return {"replicas": case.replicas, "num_features": case.num_features, "feature_axis": case.feature_axis,
            "rank": case.rank, "dtype": case.dtype, "momentum": case.momentum, "eps": case.eps,
            "weight": arrays.get("weight"), "bias": arrays.get("bias"), "masked": case.masked}


def run_step(impl, case: SyncCase, device: str):
    """(arrays, params, result): the adapter's answer, or {'error': ...} if it raised."""
    arrays = materialize(case)
    params = build_params(case, arrays)
    inputs = {"x": arrays["x"], "dy": arrays["dy"], "mask": arrays["mask"] if case.masked else None}
    try:
        result = impl.run(params, inputs, device)
    except Exception as exc:
        if type(exc).__name__ in ("Unsupported", "SyncUnsupported"):
            raise SyncUnsupported(str(exc)) from None
        result = {"error": f"{type(exc).__name__}: {exc}", "replicas": []}
    return arrays, params, result


def evaluate(impl, case: SyncCase, device, spec, profile, nested=False, emitted=None):
    arrays, params, result = run_step(impl, case, device)
    ctx = SyncCtx(case, arrays, result, profile, spec, impl.capabilities)
    if not nested:
        ctx.rerun = lambda variant: evaluate(impl, variant, device, spec, profile, nested=True, emitted=emitted)[0]
    return run_sync_checks(ctx, emitted), arrays, result


def _candidates(c: SyncCase):
    """Smaller cases that keep the case's kind (even stays even, masked stays masked)."""
    if c.replicas > 2:
        k = c.replicas - 1
        yield c.replace(counts=c.counts[:k], rows=c.rows[:k])
    if c.even and c.counts[0] > 1:
        n = c.counts[0] - 1
        yield c.replace(counts=(n,) * c.replicas, rows=(n,) * c.replicas)
    inner = list(c.inner)
    for a in range(len(inner)):
        if a + 1 != c.feature_axis and inner[a] > 1:
            s = inner.copy()
            s[a] -= 1
            yield c.replace(inner=tuple(s))
    if c.num_features > 1:
        s = inner.copy()
        s[c.feature_axis - 1] = 1
        yield c.replace(inner=tuple(s))
    if c.affine != "random":
        yield c.replace(affine="random")
    if c.seed:
        yield c.replace(seed=0)


def shrink(impl, case, clause, device, spec, profile, budget=20):
    def fails(c):
        if sum(c.counts) * int(np.prod(c.inner)) // max(c.num_features, 1) < 2:
            return None   # fewer than two values per channel: another clause's case
        try:
            outs, _, _ = evaluate(impl, c, device, spec, profile)
        except Exception:
            return None
        return next((o for o in outs if o.clause == clause and not o.ok), None)
    return greedy_shrink(case, _candidates, fails, budget)


def audit_sync(impl, device, spec, profile, *, max_examples=None, seed=0, shrink_budget=20,
               progress=None, deadline_s=None, quota=DEFAULT_QUOTA, emitted=None) -> AuditResult:
    """Explore SyncCases (the single-device engine's explorer, another strategy), at least
    `quota` per cross-replica clause the wrapper can be checked on; tally every outcome per
    (clause, dtype). Raises SyncUnsupported when the engine refuses outright."""
    caps = impl.capabilities
    pool = sync_layout_pool(caps, seed, caps.layout_pool) if caps.layout_pool else None
    max_examples = cap_for(quota, max_examples)
    scheduler = None
    if quota:
        foci = {c.id: c.focus for c in spec.clauses_for(profile, scope="data_parallel")
                if not missing_capability(caps, c.needs)}
        scheduler = QuotaScheduler(foci, quota, merge_focus, meets)

    refused = []

    def run(case):
        try:
            return evaluate(impl, case, device, spec, profile, emitted=emitted)[0]
        except SyncUnsupported as exc:   # one refusal settles it: no more cases
            refused.append(str(exc))
            return []

    t0 = time.perf_counter()
    tallies, count, _, first, sequence = explore(
        sync_cases(caps, pool=pool), sync_pinned_for(caps), run, max_examples=max_examples,
        seed=seed, progress=progress, deadline_s=deadline_s, stop=lambda: bool(refused), scheduler=scheduler,
        aimed=aimed_strategies(lambda focus: sync_cases(caps, focus=focus, pool=pool)))
    if refused:
        raise SyncUnsupported(refused[0])
    blocked = find_blocked(tallies, spec, profile, lambda case, variant, compute=None: evaluate(impl, case, device, spec, variant)[0])
    shrunk = {}
    for key, t in tallies.items():
        if t.failed and t.failing_case is not None and shrink_budget > 0 and key not in blocked:
            shrunk[key] = shrink(impl, t.failing_case, key[0], device, spec, profile, shrink_budget)
    return AuditResult(tallies, count, time.perf_counter() - t0, [], shrunk, first[0], first[1],
                       scheduler.summary() if scheduler else None, sequence, blocked)


def reproduce(folder) -> int:
    """Re-run a cross-replica case saved by reproducers.write_sync (its repro.py calls this);
    print the finding, then the outcome of its clause now; 1 if it still fails."""
    data = np.load(Path(folder) / "case.npz", allow_pickle=False)
    meta = json.loads(str(data["meta"]))
    case = SyncCase.from_json(meta["case"])
    impl = find(meta["implementation"])
    spec = get_spec()
    outs, _, result = evaluate(impl, case, meta["device"], spec, spec.profile(impl.profile))
    print(meta["said"])
    if result.get("error"):
        print("the call raised:", result["error"])
    bad = False
    for o in outs:
        if o.clause == meta["clause"]:
            print(("PASS " if o.ok else "FAIL ") + message(o))
            bad = bad or not o.ok
    return 1 if bad else 0

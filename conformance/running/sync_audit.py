"""Audit one data-parallel wrapper (an engine running a BN layer on R replicas):
spec -> SyncCase -> (oracle on the global batch, the wrapper's step) -> comparison -> finding.

The single-device engine's tallies, records and known-deviation handling are reused; what
differs is the case (per-replica arrays), the call (one step on R replicas at once) and
the checks (sync_checks.py). The adapter bounds each step in time itself (a hung
collective comes back as an error, its processes killed); the runner bounds the whole.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bnconf.running.audit import DEFAULT_QUOTA, AuditResult, aimed_strategies, cap_for, explore, greedy_shrink
from bnconf.cases.sync_case import SyncCase, materialize
from bnconf.checks.sync import SyncCtx, run_sync_checks

# Single-device clauses a cross-replica deviation can be attributed to (sync_checks.py).
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
    from bnconf.cases.quota import QuotaScheduler
    from bnconf.running.audit import missing_capability
    from bnconf.cases.strategies import meets, merge_focus, sync_cases, sync_layout_pool, sync_pinned_for

    caps = impl.capabilities
    pool = sync_layout_pool(caps, seed, caps["layout_pool"]) if caps.get("layout_pool") else None
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
    from bnconf.checks.blocking import find_blocked
    blocked = find_blocked(tallies, spec, profile, lambda case, variant, compute=None: evaluate(impl, case, device, spec, variant)[0])
    shrunk = {}
    for key, t in tallies.items():
        if t.failed and t.failing_case is not None and shrink_budget > 0 and key not in blocked:
            shrunk[key] = shrink(impl, t.failing_case, key[0], device, spec, profile, shrink_budget)
    return AuditResult(tallies, count, time.perf_counter() - t0, [], shrunk, first[0], first[1],
                       scheduler.summary() if scheduler else None, sequence, blocked)


# ---------------------------------------------------------------- reproducers
REPRO = '''"""Reproduce a bnconf cross-replica finding: {impl} on {device}, clause {clause}.

Re-runs the saved case (per-replica inputs in case.npz) through the same adapter and
re-checks it. Needs bnconf installed (the multi-replica harness lives there), and the
framework. Saved: the case, every replica's inputs, the outputs seen in the audit.
"""
import json, os, sys
from bnconf.running.sync_audit import reproduce

sys.exit(reproduce(os.path.dirname(os.path.abspath(__file__))))
'''


def write_reproducer(out_dir, impl, device, clause, case: SyncCase, outcome) -> str:
    import re
    def safe(t):
        return re.sub(r"[^A-Za-z0-9_.-]", "_", t)
    d = Path(out_dir) / safe(impl.name) / safe(f"{device}-{case.dtype}-{clause}")
    d.mkdir(parents=True, exist_ok=True)
    arrays = materialize(case)
    save = {}
    for r in range(case.replicas):
        save[f"x/{r}"] = arrays["x"][r]
        save[f"dy/{r}"] = arrays["dy"][r]
        save[f"mask/{r}"] = arrays["mask"][r]
    for k in ("weight", "bias"):
        if arrays.get(k) is not None:
            save[k] = arrays[k]
    cmp = outcome.comparison.to_json() if outcome is not None and outcome.comparison is not None else None
    meta = {"implementation": impl.name, "device": device, "clause": clause, "case": case.to_json(),
            "note": outcome.note if outcome is not None else "", "comparison": cmp}
    np.savez_compressed(d / "case.npz", meta=np.array(json.dumps(meta)), **save)
    (d / "repro.py").write_text(REPRO.format(impl=impl.name, device=device, clause=clause))
    return str(d)


def reproduce(folder) -> int:
    """Re-run a saved cross-replica case; print the outcome of its clause; 1 if it still fails."""
    from bnconf.running.registry import find
    from bnconf.spec.loader import get_spec
    data = np.load(Path(folder) / "case.npz", allow_pickle=False)
    meta = json.loads(str(data["meta"]))
    case = SyncCase.from_json(meta["case"])
    impl = find(meta["implementation"])
    spec = get_spec()
    outs, _, result = evaluate(impl, case, meta["device"], spec, spec.profile(impl.profile))
    print(f"{impl.name} on {meta['device']}: clause {meta['clause']}")
    print("case:", json.dumps(meta["case"]))
    if result.get("error"):
        print("the call raised:", result["error"])
    bad = False
    for o in outs:
        if o.clause == meta["clause"]:
            print(("PASS " if o.ok else "FAIL ") + (o.comparison.describe() if o.comparison else o.note)
                  + (f" [{o.note}]" if o.note and o.comparison else ""))
            bad = bad or not o.ok
    return 1 if bad else 0

"""Cross-replica clause checks: one data-parallel step of one SyncCase in, outcomes out.

The reference is the float64 oracle on the global batch (every replica's real rows,
concatenated): a synchronized layer must match it (BN-SYNC-GLOBAL / -WEIGHTED / -GRAD);
an unsynchronized one must match the oracle run on each replica alone (BN-SYNC-LOCAL).
Tolerances come from the same error model as single-device BN, with n the count the
statistics are taken over. When a synchronized result deviates, the alternatives a real
engine might compute instead (each replica's own statistics, or the unweighted average of
per-replica statistics) are tried, and the one that matches is named in the finding.
"""
from __future__ import annotations

import traceback
import warnings

import numpy as np

from bnconf.reference import oracle

from bnconf.reference import error_model as tolerance
from bnconf.cases.case import channel_kappa
from bnconf.checks.context import Outcome, SyncCtx, _worst
from bnconf.reference.comparison import compare


# ---------------------------------------------------------------- references
def _update(ctx, m, v, n):
    """One running-statistics update from the profile's initial state (the oracle's)."""
    p, C = ctx.profile, ctx.case.num_features
    init = (np.full(C, p.initial["running_mean"]), np.full(C, p.initial["running_var"]), np.zeros(C), np.zeros(C), 0)
    st = oracle.update_running(init, np.reshape(m, -1), np.reshape(v, -1), n, ctx.case.momentum, p)
    return st[0], st[1]


def _local(ctx):
    """Each non-empty replica alone: (y, (running mean, running var) after its own update)."""
    out = []
    for x in ctx.xs:
        if x.shape[0]:
            y, m, v, n = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)
            out.append((y, _update(ctx, m, v, n)))
    return out


def _global_reference(ctx, stats="global"):
    """Expected y and running (mean, var) for the global batch under `stats`:
    'global' (the spec), 'unweighted' (mean of per-replica mean and E[x^2], as a pmean of
    local moments computes), or 'local' (each replica's own statistics, running update
    averaged over replicas)."""
    x_g = np.concatenate(ctx.xs, axis=0)
    if stats == "global":
        y, m, v, n = oracle.train_forward(x_g, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)
        return y, _update(ctx, m, v, n)
    if stats == "unweighted":
        live = [x for x in ctx.xs if x.shape[0] > 0]
        axes = oracle.reduce_axes(x_g.ndim, ctx.fa)
        m = np.mean([x.mean(axis=axes, keepdims=True) for x in live], axis=0)
        m2 = np.mean([(x ** 2).mean(axis=axes, keepdims=True) for x in live], axis=0)
        v = np.maximum(m2 - m ** 2, 0.0)
        y = oracle.normalize(x_g, m, v, ctx.eps, ctx.weight, ctx.bias, ctx.fa, ctx.profile.eps_placement)
        return y, _update(ctx, m, v, ctx.case.n_global)
    local = _local(ctx)
    return (np.concatenate([y for y, _ in local], axis=0),
            (np.mean([s[0] for _, s in local], axis=0), np.mean([s[1] for _, s in local], axis=0)))


def _y_bound(ctx, stats, y_exp):
    """Per-row bound: the global model for synchronized statistics, each replica's own n
    for local statistics."""
    if stats != "local":
        x_g = np.concatenate(ctx.xs, axis=0)
        return tolerance.y_train_bound(ctx.model, x_g, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.u_out, y_exp)
    live = [x for x in ctx.xs if x.shape[0]]
    return np.concatenate([tolerance.y_train_bound(ctx.model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.u_out, y)
                           for x, (y, _) in zip(live, _local(ctx))], axis=0)


def _running_bound(ctx, model=None):
    x_g = np.concatenate(ctx.xs, axis=0)
    p = ctx.profile
    C = ctx.case.num_features
    init = (np.full(C, p.initial["running_mean"]), np.full(C, p.initial["running_var"]))
    u_state = tolerance.unit_roundoff(ctx.result.get("state_dtype") or ctx.case.dtype)
    return tolerance.running_bounds(model or ctx.model, [x_g], ctx.case.momentum, p, ctx.fa, init, u_state)[0]


def _compare_stats(ctx, stats, model=None, y_only=False):
    """Worst comparison of y and replica 0's running statistics against `stats` (y alone when
    attributing: the running statistics carry their own storage precision)."""
    y_exp, (rm_exp, rv_exp) = _global_reference(ctx, stats)
    y_act = ctx.real_rows("y")
    bound = _y_bound(ctx, stats, y_exp)
    if model is not None:
        bound = bound * (model.u_c / ctx.model.u_c)
    cmps = [compare(y_act, y_exp, bound, key=f"y[{stats} statistics]")]
    rep0 = ctx.result["replicas"][0]
    if ctx.caps.running_stats and rep0.get("running_mean") is not None and not y_only:
        bm, bv = _running_bound(ctx, model)
        cmps.append(compare(rep0["running_mean"], rm_exp, bm, key="replica 0 running_mean"))
        cmps.append(compare(rep0["running_var"], rv_exp, bv, key="replica 0 running_var"))
    return _worst(cmps)


def _measured_kappa(ctx) -> float:
    """max over channels of |mean|/std of the global batch's real rows."""
    x = np.concatenate(ctx.xs, axis=0)
    if x.shape[0] == 0:
        return 0.0
    k = channel_kappa(x, ctx.fa)
    k = k[np.isfinite(k)]
    return float(k.max()) if k.size else 0.0


def _error_outcome(ctx, clause):
    return Outcome(clause, False, None, f"the call failed: {ctx.result['error']}")


# ---------------------------------------------------------------- checks
def sync_forward(ctx: SyncCtx) -> list[Outcome]:
    """BN-SYNC-GLOBAL (even split), BN-SYNC-WEIGHTED (uneven or masked), BN-SYNC-LOCAL
    (unsynchronized layer): outputs and the running-statistics update."""
    clause = ctx.forward_clause
    if ctx.result.get("error"):
        return [_error_outcome(ctx, clause)]
    expected = "global" if ctx.synchronized else "local"
    # Unsynchronized: which replica update is kept is the wrapper's convention (measured by
    # sync_consistent), so only the outputs are judged here.
    base = _compare_stats(ctx, expected, y_only=not ctx.synchronized)
    if base.ok:
        masked = _masked_rows(ctx, None)
        if masked is not None and not masked.ok:
            return [Outcome(clause, False, masked, "masked rows receive a gradient", measured={"statistics": expected})]
        return [Outcome(clause, True, base, measured={"statistics": expected})]
    # Attribution: which statistics does the implementation compute instead? (Only when the
    # outputs deviate; running statistics alone deviating is a precision question, below.)
    y_ok = _compare_stats(ctx, expected, y_only=True).ok
    for alt in () if y_ok else ("local", "unweighted", "global"):
        if alt == expected:
            continue
        if alt == "unweighted" and ctx.case.even:
            continue   # the same as global on even splits
        c = _compare_stats(ctx, alt, y_only=True)
        if c.ok:
            what = {"local": "each replica's own statistics (not synchronized)",
                    "unweighted": "the unweighted average of per-replica mean and E[x^2] (counts ignored)",
                    "global": "the global batch's statistics (synchronized)"}[alt]
            return [Outcome(clause, False, base, f"matches {what}", measured={"statistics": alt})]
    # Precision: float64 computed in float32, or an ill-conditioned one-pass variance.
    # float64 computed in float32 shows as errors of float32 size: ~2^29 times the float64 bound.
    # The evidence of single-device (attribution.float64_in_float32: within the float32 model, and
    # the same case in float32 passes), with a higher floor: >= 1e3 times the float64 bound (10 there). A float32 rounding of one
    # operand (a float32 momentum or initial state) is float32-sized relative to that term only.
    if (ctx.case.dtype == "float64" and base.ratio >= 1e3
            and _compare_stats(ctx, expected, ctx.model.with_compute("float32")).ok
            and (ctx.rerun is None or any(o.clause == clause and o.ok
                                           for o in ctx.rerun(ctx.case.replace(dtype="float32"))))):
        return [Outcome("BN-DTYPE-F64", False, base, "errors of float32 size (within the float32 model, and the "
                        "same case in float32 passes): float32 arithmetic or storage in the float64 path",
                        measured={"statistics": expected})]
    # One-pass variance loses ~kappa^2 u sigma^2 where the model allows ~kappa u sigma^2: an
    # error beyond 10 kappa^2 times the bound is not a precision problem, whatever the re-run says.
    # kappa is measured on the data (a few rows drawn at kappa=10 can sit at 100).
    if "running_mean" not in base.key:   # a mean does not depend on the variance formula
        cond = _conditioning(ctx, clause, base, {"statistics": expected})
        if cond is not None:
            return [cond]
    return [Outcome(clause, False, base, measured={"statistics": "other"})]


def _conditioning(ctx, clause, base, measured):
    """BN-VAR-STABLE when an ill-conditioned case fails and the same case centred passes."""
    kappa = max(float(ctx.case.kappa), _measured_kappa(ctx))
    if kappa >= ctx.kappa_thr and ctx.rerun is not None and base.ratio <= 10 * kappa ** 2:
        outs = ctx.rerun(ctx.case.replace(kappa=0.0, centred=True))
        if any(o.clause == clause and o.ok for o in outs):
            return Outcome("BN-VAR-STABLE", False, base,
                           f"{clause}: fails at |mean|/std = {kappa:.3g}, passes the same case centred: "
                           "the variance loses precision (one-pass E[x^2]-E[x]^2)", measured=measured)
    return None


def sync_consistent(ctx: SyncCtx) -> list[Outcome]:
    """BN-SYNC-CONSISTENT: every replica's running statistics equal replica 0's."""
    clause = "BN-SYNC-CONSISTENT"
    if ctx.result.get("error"):
        return [_error_outcome(ctx, clause)]
    reps = ctx.result["replicas"]
    if not ctx.caps.running_stats or reps[0].get("running_mean") is None:
        return []
    bm, bv = _running_bound(ctx)
    cmps = []
    for r, rep in enumerate(reps[1:], 1):
        cmps.append(compare(rep["running_mean"], reps[0]["running_mean"], bm, key=f"replica {r} running_mean"))
        cmps.append(compare(rep["running_var"], reps[0]["running_var"], bv, key=f"replica {r} running_var"))
    w = _worst(cmps)
    identical = all(np.array_equal(np.asarray(rep["running_mean"]), np.asarray(reps[0]["running_mean"]))
                    and np.array_equal(np.asarray(rep["running_var"]), np.asarray(reps[0]["running_var"]))
                    for rep in reps[1:])
    measured = {"replicas bitwise identical": identical}
    if not ctx.synchronized:
        measured["running update kept"] = _which_update(ctx)
    return [Outcome(clause, w.ok, w, "" if w.ok else "replicas hold different running statistics",
                    measured=measured)]


def _which_update(ctx) -> str:
    """For an unsynchronized layer: which combination of the replicas' own updates the
    wrapper keeps (a measured convention, reported, not judged)."""
    per = [np.concatenate(s) for _, s in _local(ctx)]
    act = np.concatenate([np.asarray(ctx.result["replicas"][0]["running_mean"], np.float64),
                          np.asarray(ctx.result["replicas"][0]["running_var"], np.float64)])
    _, (gm, gv) = _global_reference(ctx, "global")
    cands = {"mean of the replicas' updates": np.mean(per, axis=0), "replica 0's update": per[0],
             "the global batch's update": np.concatenate([gm, gv])}
    scale = np.abs(act).max() + 1e-30
    best = min(cands, key=lambda k: np.abs(cands[k] - act).max())
    return best if np.abs(cands[best] - act).max() <= 1e-3 * scale else "other"


def sync_grads(ctx: SyncCtx) -> list[Outcome]:
    """BN-SYNC-GRAD: dx restricted to each replica's rows, and the replicas' summed dgamma,
    dbeta, equal the global batch's; masked rows (dy = 0 there) get dx = 0 (BN-SYNC-WEIGHTED)."""
    if not ctx.synchronized or not ctx.caps.grads:
        return []
    clause = "BN-SYNC-GRAD"
    if ctx.result.get("error"):
        return [_error_outcome(ctx, clause)]
    if not _compare_stats(ctx, "global").ok:
        return []   # the forward already deviates (its own finding): no cascade
    x_g = np.asarray(ctx.arrays["x_global"], np.float64)
    dy_g = np.asarray(ctx.arrays["dy_global"], np.float64)
    exp = oracle.grads_train(x_g, dy_g, ctx.weight, ctx.eps, ctx.fa)
    bounds = tolerance.grads_train_bound(ctx.model, x_g, dy_g, ctx.weight, ctx.eps, ctx.fa, ctx.u_out, exp)
    cmps = [compare(ctx.real_rows("dx"), exp[0], bounds[0], key="dx (real rows, all replicas)")]
    for name, e, b in (("dweight", exp[1], bounds[1]), ("dbias", exp[2], bounds[2])):
        if ctx.result.get(name) is not None and ctx.case.affine != "off":
            cmps.append(compare(ctx.result[name], e, b, key=f"{name} (summed over replicas)"))
    w = _worst(cmps)
    if not w.ok:
        cond = _conditioning(ctx, clause, w, {})
        if cond is not None:
            return [cond]
    return [Outcome(clause, w.ok, w)]


def _masked_rows(ctx, scale):
    """BN-SYNC-WEIGHTED: rows that are masked out (dy = 0 there) get no gradient."""
    if ctx.case.masked and ctx.caps.grads:
        if scale is None:
            x_g = np.asarray(ctx.arrays["x_global"], np.float64)
            scale = np.abs(oracle.grads_train(x_g, ctx.arrays["dy_global"], ctx.weight, ctx.eps, ctx.fa)[0]).max()
        pad = []
        for rep, real in zip(ctx.result["replicas"], ctx.arrays["real"]):
            dx = np.asarray(rep["dx"], np.float64)
            if dx.shape[:1] == real.shape:
                pad.append(dx[~real].reshape(-1))
        pad = np.concatenate(pad) if pad else np.zeros(0)
        allowed = ctx.model.safety * ctx.model.u_c * scale
        return compare(pad, np.zeros_like(pad), allowed, key="dx on masked rows")
    return None


SYNC_CHECKS = (sync_forward, sync_consistent, sync_grads)
# what each check can emit, its conditioning attribution (SYNC_NUMERIC) included; lint_emissions
# holds it to what they do
SYNC_NUMERIC = ("BN-VAR-STABLE",)
SYNC_EMITS = {"sync_forward": ("BN-SYNC-GLOBAL", "BN-SYNC-WEIGHTED", "BN-SYNC-LOCAL", *SYNC_NUMERIC),
              "sync_consistent": ("BN-SYNC-CONSISTENT",), "sync_grads": ("BN-SYNC-GRAD", *SYNC_NUMERIC)}


def malformed(ctx: SyncCtx) -> str | None:
    """What is wrong with the shape of the adapter's answer, or None: a malformed answer is the
    implementation's failure, while a check that crashes on a well-formed one is bnconf's."""
    if ctx.result.get("error"):
        return None
    reps = ctx.result.get("replicas")
    if not isinstance(reps, (list, tuple)) or len(reps) != ctx.case.replicas:
        return f"expected {ctx.case.replicas} per-replica results, got {type(reps).__name__}"
    C = ctx.case.num_features
    for r, rep in enumerate(reps):
        if not isinstance(rep, dict) or rep.get("y") is None:
            return f"replica {r}: no output y"
        for key in ("running_mean", "running_var"):
            if rep.get(key) is not None and np.size(rep[key]) != C:
                return f"replica {r}: {key} has {np.size(rep[key])} values for {C} features"
    return None


def _clause_of(ctx, check) -> str:
    return ctx.forward_clause if check is sync_forward else (
        "BN-SYNC-CONSISTENT" if check is sync_consistent else "BN-SYNC-GRAD")


def run_sync_checks(ctx: SyncCtx, emitted: dict | None = None) -> list[Outcome]:
    """`emitted` (check name -> clause IDs) collects what each check really emitted (the lint)."""
    out = []
    bad = malformed(ctx)
    if bad:
        return [Outcome(_clause_of(ctx, check), False, None, f"malformed result: {bad}") for check in SYNC_CHECKS]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for check in SYNC_CHECKS:
            try:
                res = check(ctx)
                if emitted is not None:
                    emitted.setdefault(check.__name__, set()).update(o.clause for o in res)
                out.extend(res)
            except Exception as exc:  # bnconf's own failure on a well-formed answer: an error, with its traceback
                out.append(Outcome(_clause_of(ctx, check), False, None,
                                   f"check {check.__name__} crashed: {type(exc).__name__}: {exc}",
                                   error=traceback.format_exc()))
    return out

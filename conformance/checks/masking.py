"""BN-MASK: a masked training step on a fresh layer (trace.py, mask/…) against the oracle's
statistics of the kept positions (oracle.kept_rows). The error model is the unmasked one
applied to those rows: a masked reduction is a reduction of fewer terms."""
from __future__ import annotations

import numpy as np

from bnconf.checks.attribution import numeric_attribution
from bnconf.checks.context import Ctx, Outcome, _placement, _trainable_case, _worst, probe_raised
from bnconf.checks.registry import NUMERIC, check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare


@check("masking", emits=("BN-MASK", *NUMERIC))
def masking(ctx: Ctx):
    t, case = ctx.trace, ctx.case
    if "mask" not in ctx.arrays or case.special != "none" or not _trainable_case(ctx) or not ctx.standard_forward():
        return []
    raised = probe_raised(t, "mask", "BN-MASK", "a masked training call")
    if raised is not None:
        return raised
    if "mask/y" not in t:
        return []
    x, mask = ctx.arrays["x_train_0"], ctx.arrays["mask"]
    rows = oracle.kept_rows(x, mask, ctx.fa)
    u = ctx.u_out(t.get("train_0/y_dtype", case.dtype))
    y, mean, var, n = oracle.masked_train_forward(x, mask, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.eff)
    init = (t.get("init/running_mean"), t.get("init/running_var"))
    tracked = case.track_running_stats and init[0] is not None and "mask/running_mean" in t
    if tracked:
        zero = np.zeros_like(init[0])
        new = oracle.update_running((init[0], init[1], zero, zero, 0), mean, var, n, ctx.momentum, ctx.eff)

    def cmp_fn(model):
        yb = tolerance.y_train_bound(model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, y, _placement(ctx, ctx.eff),
                                     rows=rows)
        cmps = [compare(t["mask/y"], y, yb, "output of a masked training call", key="mask/y")]
        if tracked:
            (bm, bv), = tolerance.running_bounds(model, [rows], ctx.momentum, ctx.eff, 1, init, ctx.u_out(case.dtype))
            cmps += [compare(t["mask/running_mean"], new[0], bm, "running mean after a masked step",
                             key="mask/running_mean"),
                     compare(t["mask/running_var"], new[1], bv, "running variance after a masked step",
                             key="mask/running_var")]
        return _worst(cmps)
    w = cmp_fn(ctx.model)
    if w.ok:
        return [Outcome("BN-MASK", True, w)]
    # positive evidence that the mask was ignored: the output is that of every position
    unmasked = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.eff)[0]
    yb_all = tolerance.y_train_bound(ctx.model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, unmasked,
                                     _placement(ctx, ctx.eff))
    if not compare(t["mask/y"], y, yb_all).ok and compare(t["mask/y"], unmasked, yb_all).ok:
        return [Outcome("BN-MASK", False, w, f"the masked call normalized with the statistics of all "
                        f"{x.size // max(x.shape[ctx.fa], 1)} positions, not of the {n} unmasked ones")]
    # the offset is evidence only where the output shows it: running statistics stored in float32
    # read back as a tiny, consistent "offset" too
    delta = None if compare(t["mask/y"], y, yb_all).ok else _count_offset(ctx, x, rows, init, yb_all)
    if delta is not None:
        return [Outcome("BN-MASK", False, w, f"the masked mean and variance divide by the count of unmasked "
                        f"positions plus {delta:.2g}, not by the count ({n})", {"mask_count": "offset"})]
    return [numeric_attribution(ctx, "BN-MASK", cmp_fn, w)]


def _count_offset(ctx, x, rows, init, bound):
    """The offset delta when the layer's masked statistics are sum / (n + delta), a small constant
    added to the count against division by zero (read back from the running mean, the same for
    every channel, and the output then within its bound): positive evidence of a masking
    deviation, which float32 arithmetic would otherwise be blamed for in float64."""
    t = ctx.trace
    if init[0] is None or "mask/running_mean" not in t or ctx.momentum is None:
        return None
    w = oracle.momentum_weight(ctx.eff, ctx.momentum, 1)
    mu = (np.asarray(t["mask/running_mean"], np.float64) - (1 - w) * init[0]) / w
    sums, n = rows.sum(axis=0), rows.shape[0]
    use = np.abs(sums / n) > 1e-3 * (rows.std(axis=0) + 1e-300)
    if not np.any(use) or not np.all(mu[use] != 0):
        return None
    deltas = sums[use] / mu[use] - n
    delta = float(np.median(deltas))
    if not (0 < delta < 1e-2 * n) or np.any(np.abs(deltas - delta) > 0.2 * abs(delta)):
        return None
    mean = sums / (n + delta)
    var = ((rows - mean) ** 2).sum(axis=0) / (n + delta)
    m, v = (oracle._per_feature(a, x.ndim, ctx.fa) for a in (mean, var))
    y = oracle.normalize(x, m, v, ctx.eps, ctx.weight, ctx.bias, ctx.fa, ctx.eff.eps_placement)
    return delta if compare(t["mask/y"], y, bound).ok else None

"""BN-GRAD-GRAD: the training gradient differentiated once more, against the oracle's closed
form (oracle.grads_second_train) and its propagated bound (error_model.grads_second_bound).

The probe (trace.py, second/…) runs on a fresh layer: a second backward pass is a property of
the training transform, not of the statistics a layer has accumulated. Like the first-order
gradients it is judged only where the measured forward conventions are the spec's.
"""
from __future__ import annotations

import numpy as np

from bnconf.checks.attribution import numeric_attribution
from bnconf.checks.context import Ctx, Outcome, _trainable_case, _worst, probe_raised
from bnconf.checks.registry import NUMERIC, check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare

_WHAT = (("ddx", "d/dx of sum(v dx)"), ("ddweight", "d/dgamma of sum(v dx)"), ("ddy", "d/ddy of sum(v dx)"))
_KEYS = {what: i for i, (_, what) in enumerate(_WHAT)}


@check("grads_second", emits=("BN-GRAD-GRAD", *NUMERIC))
def grads_second(ctx: Ctx):
    t, case = ctx.trace, ctx.case
    # judged where the first derivatives are (an empty or one-value batch is another clause's)
    if not _trainable_case(ctx) or case.special != "none" or not ctx.standard_forward():
        return []
    raised = probe_raised(t, "second", "BN-GRAD-GRAD", "the second backward pass")
    if raised is not None:
        return raised
    if "second/ddx" not in t:
        return []
    x, dy, v = ctx.arrays["x_train_0"], ctx.arrays["dy_train"], ctx.arrays["v_train"]
    exp = oracle.grads_second_train(x, dy, v, ctx.weight, ctx.eps, ctx.fa)
    u = ctx.u_out(case.dtype)
    judged = [(i, key, what) for i, (key, what) in enumerate(_WHAT) if f"second/{key}" in t
              and (key != "ddweight" or case.affine != "off")]

    def cmp_fn(model):
        bounds = tolerance.grads_second_bound(model, x, dy, v, ctx.weight, ctx.eps, ctx.fa, u, exp)
        return _worst([compare(t[f"second/{key}"], exp[i], bounds[i], what, key=f"second/{key}")
                       for i, key, what in judged])
    w = cmp_fn(ctx.model)
    overflowed = [what for i, key, what in judged if np.all(np.isfinite(exp[i]))
                  and not np.all(np.isfinite(t[f"second/{key}"]))]
    if overflowed:   # no precision explains a non-finite value where the exact one is finite
        return [Outcome("BN-GRAD-GRAD", False, w, f"{overflowed[0]} is not finite where the exact value is "
                                                  f"(largest |exact| {np.max(np.abs(exp[_KEYS[overflowed[0]]])):.3g})")]
    if not w.ok:
        return [numeric_attribution(ctx, "BN-GRAD-GRAD", cmp_fn, w)]
    return [Outcome("BN-GRAD-GRAD", True, w)]

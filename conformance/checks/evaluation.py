"""Eval mode: the output normalized with the running statistics the training steps reported
(BN-EVAL-RUNNING), or with batch statistics where none are tracked (BN-EVAL-BATCH), and the
running statistics left as they were (BN-EVAL-NO-UPDATE)."""
from __future__ import annotations

import numpy as np

from bnconf.checks.attribution import DISTINCT, convention_attribution, numeric_attribution
from bnconf.checks.context import Ctx, Outcome, _eval_tracked, _placement, _stats_before_eval, _trainable_case
from bnconf.checks.registry import NUMERIC, check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare


@check("y_eval", emits=("BN-EVAL-RUNNING", *NUMERIC))
def y_eval(ctx: Ctx):
    if not _eval_tracked(ctx) or "eval/y" not in ctx.trace or ctx.case.special != "none":
        return []
    rm, rv = _stats_before_eval(ctx)
    if rm is None:
        return []
    x = ctx.arrays["x_eval"]
    m = oracle._per_feature(rm, x.ndim, ctx.fa)
    v = oracle._per_feature(rv, x.ndim, ctx.fa)

    def expect(profile, model=None):
        ye = tolerance.in_dtype_range(oracle.normalize(x, m, v, ctx.eps, ctx.weight, ctx.bias, ctx.fa,
                                                       profile.eps_placement), ctx.trace["eval/y_dtype"])
        return ye, tolerance.y_eval_bound(model or ctx.model, x, ctx.weight, ctx.bias, rm, rv, ctx.eps, ctx.fa,
                                          ctx.u_out(ctx.trace["eval/y_dtype"]), ye, _placement(ctx, profile))

    def cmp_under(profile, model=None):
        ye, bound = expect(profile, model)
        return compare(ctx.trace["eval/y"], ye, bound, "eval output with the reported running statistics",
                       key="eval/y")

    def cmp_fn(model):
        return cmp_under(ctx.eff, model)
    cmp = cmp_fn(ctx.model)
    if not cmp.ok:
        conv = convention_attribution(ctx, cmp, cmp_under, expect)
        if conv is not None:
            return [conv]
    if cmp.ok:
        return [Outcome("BN-EVAL-RUNNING", True, cmp)]
    if ctx.case.dtype in ("float16", "bfloat16"):
        # a running mean rounded to bfloat16 can cancel x exactly (x - rm = 0), which looks like
        # batch statistics on a channel that rounding made constant: precision is tried first
        num = numeric_attribution(ctx, "BN-EVAL-RUNNING", cmp_fn, cmp, conditioning=False)
        if num.clause != "BN-EVAL-RUNNING":
            return [num]
    y_batch = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
    b2 = tolerance.y_train_bound(ctx.model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa,
                                 ctx.u_out(ctx.trace["eval/y_dtype"]), y_batch, _placement(ctx, ctx.profile))
    # evidence only where batch and running normalization differ beyond the bound (after one
    # step at a small old-value weight they can coincide); cmp kept its expected array (it failed)
    if compare(ctx.trace["eval/y"], y_batch, b2).ok and not compare(cmp.expected_array, y_batch, DISTINCT * b2).ok:
        return [Outcome("BN-EVAL-RUNNING", False, cmp, "eval normalized with batch statistics")]
    return [numeric_attribution(ctx, "BN-EVAL-RUNNING", cmp_fn, cmp, conditioning=False)]


@check("y_eval_no_running", emits=("BN-EVAL-BATCH", *NUMERIC))
def y_eval_no_running(ctx: Ctx):
    if _eval_tracked(ctx) or "eval/y" not in ctx.trace or ctx.case.special != "none" or not _trainable_case(ctx):
        return []
    x = ctx.arrays["x_eval"]
    y_exp = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.eff)[0]

    def cmp_fn(model):
        bound = tolerance.y_train_bound(model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa,
                                        ctx.u_out(ctx.trace["eval/y_dtype"]), y_exp, _placement(ctx, ctx.eff))
        return compare(ctx.trace["eval/y"], y_exp, bound, "eval output with batch statistics", key="eval/y")
    cmp = cmp_fn(ctx.model)
    if not cmp.ok:
        return [numeric_attribution(ctx, "BN-EVAL-BATCH", cmp_fn, cmp)]
    return [Outcome("BN-EVAL-BATCH", True, cmp)]


@check("eval_no_update", emits=("BN-EVAL-NO-UPDATE",))
def eval_no_update(ctx: Ctx):
    rm, rv = _stats_before_eval(ctx)
    if rm is None or "eval/running_mean" not in ctx.trace:
        return []
    before = np.concatenate([rm, rv])
    after = np.concatenate([ctx.trace["eval/running_mean"], ctx.trace["eval/running_var"]])
    cmp = compare(after, before, 0.0, "running statistics after eval vs before", key="eval/running_mean+var")
    return [Outcome("BN-EVAL-NO-UPDATE", cmp.ok, cmp, "" if cmp.ok else "eval changed the running statistics")]

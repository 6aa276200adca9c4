"""Gradients of the training step (BN-GRAD-TRAIN) and of eval mode (BN-GRAD-EVAL) against the
oracle's. The oracle differentiates the spec's forward conventions: where the implementation
measured other ones, its gradients are not judged (the forward finding stands alone)."""
from __future__ import annotations

from bnconf.checks.attribution import numeric_attribution
from bnconf.checks.context import Ctx, Outcome, _eval_tracked, _stats_before_eval, _trainable_case, _worst
from bnconf.checks.registry import NUMERIC, check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare


def _grad_comparison(ctx, phase, exp, bounds):
    """The worst of dx, dgamma, dbeta of one phase against the oracle's and their bounds."""
    cmps = [compare(ctx.trace[f"{phase}/dx"], exp[0], bounds[0], f"dx ({phase})", key=f"{phase}/dx")]
    if f"{phase}/dweight" in ctx.trace and ctx.case.affine != "off":
        cmps.append(compare(ctx.trace[f"{phase}/dweight"], exp[1], bounds[1], f"dgamma ({phase})",
                            key=f"{phase}/dweight"))
        cmps.append(compare(ctx.trace[f"{phase}/dbias"], exp[2], bounds[2], f"dbeta ({phase})", key=f"{phase}/dbias"))
    return _worst(cmps)


@check("grads_train", emits=("BN-GRAD-TRAIN", *NUMERIC))
def grads_train(ctx: Ctx):
    if "train_0/dx" not in ctx.trace or not _trainable_case(ctx) or ctx.case.special != "none" \
            or not ctx.standard_forward():
        return []
    x, dy = ctx.arrays["x_train_0"], ctx.arrays["dy_train"]
    exp = oracle.grads_train(x, dy, ctx.weight, ctx.eps, ctx.fa)
    u = ctx.u_out(ctx.case.dtype)

    def cmp_fn(model):
        bounds = tolerance.grads_train_bound(model, x, dy, ctx.weight, ctx.eps, ctx.fa, u, exp)
        return _grad_comparison(ctx, "train_0", exp, bounds)
    w = cmp_fn(ctx.model)
    if not w.ok:
        return [numeric_attribution(ctx, "BN-GRAD-TRAIN", cmp_fn, w)]
    return [Outcome("BN-GRAD-TRAIN", w.ok, w)]


@check("grads_eval", emits=("BN-GRAD-EVAL", *NUMERIC))
def grads_eval(ctx: Ctx):
    if "eval/dx" not in ctx.trace or ctx.case.special != "none" or not _trainable_case(ctx) \
            or not ctx.standard_forward():
        return []
    x, dy = ctx.arrays["x_eval"], ctx.arrays["dy_eval"]
    u = ctx.u_out(ctx.case.dtype)
    tracked = _eval_tracked(ctx)
    rm, rv = _stats_before_eval(ctx)
    if tracked and rm is None:
        return []
    exp = (oracle.grads_eval(x, dy, ctx.weight, rm, rv, ctx.eps, ctx.fa) if tracked
           else oracle.grads_train(x, dy, ctx.weight, ctx.eps, ctx.fa))

    def cmp_fn(model):
        if tracked:
            bounds = tolerance.grads_eval_bound(model, x, dy, ctx.weight, rm, rv, ctx.eps, ctx.fa, u, exp)
        else:
            bounds = tolerance.grads_train_bound(model, x, dy, ctx.weight, ctx.eps, ctx.fa, u, exp)
        return _grad_comparison(ctx, "eval", exp, bounds)
    w = cmp_fn(ctx.model)
    if not w.ok:
        return [numeric_attribution(ctx, "BN-GRAD-EVAL", cmp_fn, w, conditioning=not tracked)]
    return [Outcome("BN-GRAD-EVAL", w.ok, w)]

"""BN-FREEZE and BN-RESET: the switches that change a trained layer's relation to its
statistics. Both probes run on a fresh layer trained one step (trace.py, freeze/… and reset/…).

What a frozen layer does in a training call is the profile's `frozen_mode`, data like every
other convention: the check computes both modes' oracle outputs and blames the layer only
when its output is outside its own mode's bound; it names the other mode as measured when
the output is nearer that one (a Keras layer that keeps training once frozen).
"""
from __future__ import annotations

import numpy as np

from bnconf.checks.attribution import numeric_attribution
from bnconf.checks.context import Ctx, Outcome, _eval_tracked, _placement, _trainable_case, _worst, eval_expected, \
    probe_raised
from bnconf.checks.mode_switch import _stats, _update_shows
from bnconf.checks.registry import NUMERIC, check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare


def _mode_expected(ctx, mode, x, dy, before, u, model=None):
    """(y, y bound, dx, dx bound) of a training call in `mode` on the statistics `before`."""
    model = model or ctx.model
    if mode == "inference":
        m, v = oracle._per_feature(before[0], x.ndim, ctx.fa), oracle._per_feature(before[1], x.ndim, ctx.fa)
        y = oracle.normalize(x, m, v, ctx.eps, ctx.weight, ctx.bias, ctx.fa, ctx.eff.eps_placement)
        yb = tolerance.y_eval_bound(model, x, ctx.weight, ctx.bias, *before, ctx.eps, ctx.fa, u, y,
                                    _placement(ctx, ctx.eff))
        dx = oracle.grads_eval(x, dy, ctx.weight, before[0], before[1], ctx.eps, ctx.fa)
        dxb = tolerance.grads_eval_bound(model, x, dy, ctx.weight, before[0], before[1], ctx.eps, ctx.fa, u, dx)
    else:
        y = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.eff)[0]
        yb = tolerance.y_train_bound(model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, y, _placement(ctx, ctx.eff))
        dx = oracle.grads_train(x, dy, ctx.weight, ctx.eps, ctx.fa)
        dxb = tolerance.grads_train_bound(model, x, dy, ctx.weight, ctx.eps, ctx.fa, u, dx)
    return y, yb, dx[0], dxb[0]


def _trained_stats(ctx, model, before, x, u):
    """The running statistics one more training step from `before` must give, with their bound;
    None where the step's weight depends on state the probe does not see (a cumulative or
    debiased average)."""
    if ctx.momentum is None or ctx.eff.momentum_form not in ("batch_weight", "old_weight"):
        return None
    mean, var, n = oracle.batch_stats(x, ctx.fa, ctx.eff.reduction)
    zero = np.zeros_like(before[0])
    new = oracle.update_running((before[0], before[1], zero, zero, 0), mean.reshape(-1), var.reshape(-1), n,
                                ctx.momentum, ctx.eff)
    (bm, bv), = tolerance.running_bounds(model, [x], ctx.momentum, ctx.eff, ctx.fa, before, u)
    return new[0], new[1], bm, bv


def _applies(ctx, probe):
    t = ctx.trace
    return (probe + "/y" in t or probe + "/error" in t) and ctx.case.special == "none" and _trainable_case(ctx) \
        and _eval_tracked(ctx)


@check("freezing", emits=("BN-FREEZE", "BN-RESET", *NUMERIC))
def freezing(ctx: Ctx):
    return _freeze(ctx) + _reset(ctx)


def _freeze(ctx):
    t, mode = ctx.trace, ctx.eff.frozen_mode
    if mode == "not_applicable" or not _applies(ctx, "freeze"):
        return []
    raised = probe_raised(t, "freeze", "BN-FREEZE", "freezing the layer or calling it frozen")
    if raised is not None:
        return raised
    before, after = _stats(t, "freeze/before_"), _stats(t, "freeze/")
    if before is None or after is None:
        return []
    x, dy = ctx.arrays["x_eval"], ctx.arrays["dy_eval"]
    u = ctx.u_out(t.get("eval/y_dtype", ctx.case.dtype))
    other = "training" if mode == "inference" else "inference"
    y_o, yb_o, _, _ = _mode_expected(ctx, other, x, dy, before, u)

    same = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after))

    def cmp_fn(model):
        y, yb, dx, dxb = _mode_expected(ctx, mode, x, dy, before, u, model)
        cmps = [compare(t["freeze/y"], y, yb, f"output of the frozen layer's training call ({mode} expected)",
                        key="freeze/y")]
        if "freeze/dx" in t and ctx.standard_forward():   # the oracle's gradients assume the spec's forward
            cmps.append(compare(t["freeze/dx"], dx, dxb, f"dx of the frozen layer's training call ({mode} "
                                "expected)", key="freeze/dx"))
        exp = _trained_stats(ctx, model, before, x, u) if mode == "training" and not same else None
        if exp is not None:
            cmps += [compare(after[0], exp[0], exp[2], "running mean after the frozen training call",
                             key="freeze/running_mean"),
                     compare(after[1], exp[1], exp[3], "running variance after the frozen training call",
                             key="freeze/running_var")]
        return _worst(cmps)
    w = cmp_fn(ctx.model)
    y, yb, _, _ = _mode_expected(ctx, mode, x, dy, before, u)
    # positive evidence of the other mode: outside its own mode's bound, inside the other's
    if not compare(t["freeze/y"], y, yb).ok and compare(t["freeze/y"], y_o, yb_o).ok:
        return [Outcome("BN-FREEZE", False, w, f"frozen, a training-mode call gave the {other} output, not the "
                        f"{mode} one", {"frozen_mode": other})]
    problems = []
    if mode == "inference" and not same:
        problems.append("frozen, a training-mode call changed the running statistics")
    if mode == "training" and same and _update_shows(ctx, before, x, u):
        problems.append("frozen parameters also froze the running statistics: a training-mode call left them")
    if problems:
        return [Outcome("BN-FREEZE", False, w, "; ".join(problems))]
    if not w.ok:   # the right mode, numerically off: a precision or conditioning root if one explains it
        return [numeric_attribution(ctx, "BN-FREEZE", cmp_fn, w)]
    return [Outcome("BN-FREEZE", True, w)]


def _reset(ctx):
    t = ctx.trace
    if not _applies(ctx, "reset"):
        return []
    raised = probe_raised(t, "reset", "BN-RESET", "resetting the running statistics")
    if raised is not None:
        return raised
    st = _stats(t, "reset/")
    if st is None:
        return [Outcome("BN-RESET", False, note="after the reset the layer reports no running statistics")]
    init = (float(ctx.profile.initial["running_mean"]), float(ctx.profile.initial["running_var"]))
    problems = [f"the running {q} is {np.round(a[:3], 4).tolist()} (first channels) after the reset, not {i}"
                for q, a, i in zip(("mean", "variance"), st, init) if not np.all(a == i)]
    if t.get("reset/counter", 0) != 0:
        problems.append(f"the step counter is {t['reset/counter']} after the reset, not 0")
    x = ctx.arrays["x_eval"]
    c = len(st[0])
    y, yb = eval_expected(ctx, x, np.full(c, init[0]), np.full(c, init[1]), ctx.u_out(ctx.case.dtype))
    cmp = compare(t["reset/y"], y, yb, "eval output after the reset (initial statistics, the layer's gamma/beta)",
                  key="reset/y")
    if not cmp.ok:
        problems.append("the eval call after the reset does not normalize with the initial statistics")
    return [Outcome("BN-RESET", not problems, cmp, "; ".join(problems))]

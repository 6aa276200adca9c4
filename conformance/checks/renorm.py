"""BN-RENORM: batch renormalization (trace.py, renorm/…) against oracle.renorm_train, two
training steps from the initial statistics and an eval call.

The bound is the training output's (error_model.y_train_bound, scaled by r) plus the error of
the corrections: r and d are quotients of statistics that each carry the error model's bound,
and clipping (1-Lipschitz) can only shrink it. The renorm and moving statistics are
exponential averages of sigma_B and mu_B, so their bounds are the same averages of the
statistics' bounds, plus one rounding per update.
"""
from __future__ import annotations

import numpy as np

from bnconf.checks.attribution import numeric_attribution
from bnconf.checks.context import Ctx, Outcome, _trainable_case, _worst, eval_expected, probe_raised
from bnconf.checks.registry import NUMERIC, check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare


def _step_errors(model, x, fa, eps):
    mean, var, n = oracle.batch_stats(x, fa)
    e_mu, e_var = tolerance.stats_error(model, mean, var, n)
    sigma = np.sqrt(var + eps)
    return e_mu.reshape(-1), (e_var / (2 * sigma) + model.safety * model.u_c * sigma).reshape(-1)


def _expected(ctx, model, clipping, renorm_m):
    """Per step: (y, its bound, r, dx, its bound, state after it, the state's bound)."""
    t, fa, eps, S = ctx.trace, ctx.fa, ctx.eps, model.safety
    u = ctx.u_out(t.get("train_0/y_dtype", ctx.case.dtype))
    m0, v0 = float(ctx.profile.initial["running_mean"]), float(ctx.profile.initial["running_var"])
    c = ctx.case.num_features
    state = (np.full(c, m0), np.full(c, np.sqrt(v0)), np.full(c, m0), np.full(c, np.sqrt(v0)))
    bound = tuple(np.zeros(c) for _ in range(4))
    out = []
    for k, x in enumerate((ctx.arrays["x_train_0"], ctx.arrays["x_eval"])):
        y, new, r, d = oracle.renorm_train(x, ctx.weight, ctx.bias, eps, fa, state, ctx.momentum, renorm_m, clipping)
        mean, var, _ = oracle.batch_stats(x, fa)
        e_mu, e_sig = _step_errors(model, x, fa, eps)
        mu_b, sigma_b = mean.reshape(-1), np.sqrt(var.reshape(-1) + eps)
        sigma_r = np.maximum(state[3], np.sqrt(eps))
        raw_r, raw_d = sigma_b / sigma_r, (mu_b - state[2]) / sigma_r
        e_r = np.abs(raw_r) * (e_sig / sigma_b + bound[3] / sigma_r + S * model.u_c)
        e_d = (e_mu + bound[2]) / sigma_r + np.abs(raw_d) * (bound[3] / sigma_r + S * model.u_c)
        base = oracle.train_forward(x, None, None, eps, fa, ctx.eff)[0]
        xh_b = tolerance.y_train_bound(model, x, None, None, eps, fa, u, base)
        g, b = (np.ones(1) if ctx.weight is None else np.abs(oracle._per_feature(ctx.weight, x.ndim, fa)),
                np.zeros(1) if ctx.bias is None else np.abs(oracle._per_feature(ctx.bias, x.ndim, fa)))

        def pf(a):
            return oracle._per_feature(a, x.ndim, fa)
        y_b = g * (np.abs(pf(r)) * xh_b + np.abs(base) * pf(e_r) + pf(e_d)) \
            + S * model.u_c * (np.abs(y) + b) + tolerance.rounding(u, np.abs(y))
        dx = dx_b = None
        if k == 1:   # r and d are constants to the backward pass: dx is r times the training dx
            dx0 = oracle.grads_train(x, ctx.arrays["dy_eval"], ctx.weight, eps, fa)
            dx0_b = tolerance.grads_train_bound(model, x, ctx.arrays["dy_eval"], ctx.weight, eps, fa, u, dx0)[0]
            dx = pf(r) * dx0[0]
            dx_b = np.abs(pf(r)) * dx0_b + np.abs(dx0[0]) * pf(e_r) + tolerance.rounding(u, np.abs(dx))
        ms = (ctx.momentum, ctx.momentum, renorm_m, renorm_m)
        bound = tuple(m * bo + (1 - m) * e + S * model.u_c * (np.abs(old) + np.abs(nv))
                      for m, bo, e, old, nv in zip(ms, bound, (e_mu, e_sig, e_mu, e_sig), state, new))
        state = new
        out.append((y, y_b, dx, dx_b, state, bound))
    return out


@check("renorm", emits=("BN-RENORM", *NUMERIC))
def renorm(ctx: Ctx):
    t = ctx.trace
    if ctx.case.special != "none" or not _trainable_case(ctx) or not ctx.standard_forward() or ctx.momentum is None:
        return []
    raised = probe_raised(t, "renorm", "BN-RENORM", "a batch-renormalized layer")
    if raised is not None:
        return raised
    if "renorm/eval/y" not in t:
        return []
    clipping = {k: t[f"renorm/{k}"] for k in ("rmin", "rmax", "dmax")}
    renorm_m = float(t["renorm/momentum"])
    u_state = ctx.u_out(ctx.case.dtype)

    def cmp_fn(model):
        cmps = []
        for k, (y, y_b, dx, dx_b, state, bound) in enumerate(_expected(ctx, model, clipping, renorm_m)):
            pre = f"renorm/step_{k}/"
            cmps.append(compare(t[pre + "y"], y, y_b, f"output of renormalized training step {k + 1}", key=pre + "y"))
            if dx is not None and pre + "dx" in t:
                cmps.append(compare(t[pre + "dx"], dx, dx_b, f"dx of renormalized training step {k + 1}",
                                    key=pre + "dx"))
            var = np.maximum(state[1] ** 2 - ctx.eps, 0.0)
            var_b = 2 * np.abs(state[1]) * bound[1] + model.safety * max(model.u_c, u_state) * (state[1] ** 2 + ctx.eps)
            for key, exp, b, what in (("running_mean", state[0], bound[0], "moving mean"),
                                      ("running_var", var, var_b, "moving variance (moving std^2 - eps)"),
                                      ("renorm_mean", state[2], bound[2], "renorm mean"),
                                      ("renorm_std", state[3], bound[3], "renorm std")):
                if pre + key in t:
                    cmps.append(compare(t[pre + key], exp, b + model.safety * u_state * np.abs(exp),
                                        f"{what} after renormalized step {k + 1}", key=pre + key))
        rm, rv = t.get("renorm/step_1/running_mean"), t.get("renorm/step_1/running_var")
        if rm is not None:
            x, u = ctx.arrays["x_eval"], ctx.u_out(ctx.case.dtype)
            y = eval_expected(ctx, x, rm, rv, u)[0]
            y_b = tolerance.y_eval_bound(model, x, ctx.weight, ctx.bias, rm, rv, ctx.eps, ctx.fa, u, y)
            cmps.append(compare(t["renorm/eval/y"], y, y_b, "eval output after renormalized training",
                                key="renorm/eval/y"))
        return _worst(cmps)
    w = cmp_fn(ctx.model)
    if w.ok:
        return [Outcome("BN-RENORM", True, w)]
    return [numeric_attribution(ctx, "BN-RENORM", cmp_fn, w)]

"""BN-MODE-SWITCH: training or inference follows the layer's own switch and nothing else.

The trace calls the trained layer again in each mode with gradient recording on and off
(trace.py, `mode/…`). Each call is compared with the same mode's call in the main trace, not
with the oracle: what the output should be is the business of BN-EVAL-RUNNING and
BN-NORMALIZE; this clause asks only whether the ambient grad mode changed it. Two outputs that
are each within the error model's bound of the truth are within twice that bound of each other.
"""
from __future__ import annotations

import numpy as np

from bnconf.checks.attribution import DISTINCT
from bnconf.checks.context import Ctx, Outcome, _placement, _stats_before_eval, _trainable_case, eval_expected
from bnconf.checks.registry import check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare

# the order trace.py calls them in: eval with gradients off first, the twin of an adapter's main
# eval under no_grad, so that an eval call with gradients on that moves the statistics cannot
# make the grad-off one differ too
PROBES = (("eval", False), ("eval", True), ("train", True), ("train", False))


def _prefix(mode, grad):
    return f"mode/{mode}_grad_{'on' if grad else 'off'}/"


def _stats(trace, prefix):
    m, v = trace.get(prefix + "running_mean"), trace.get(prefix + "running_var")
    return None if m is None or v is None else (np.asarray(m), np.asarray(v))


def _same(a, b) -> bool:
    return a is None or b is None or all(np.array_equal(p, q, equal_nan=True) for p, q in zip(a, b))


def _update_shows(ctx, before, x, u) -> bool:
    """Whether one training step on x must move the running statistics: by DISTINCT times the
    error model's bound of the step (a tiny momentum, a batch whose statistics the running ones
    already equal, or a buffer's own rounding can leave them bitwise as they were). Cumulative
    averaging is not judged here: its weight depends on a step count this check does not own."""
    if not ctx.case.track_running_stats or ctx.momentum is None:
        return False
    mean, var, n = oracle.batch_stats(x, ctx.fa, ctx.profile.reduction)
    state = (before[0], before[1], np.zeros_like(before[0]), np.zeros_like(before[1]), 0)
    new = oracle.update_running(state, mean.reshape(-1), var.reshape(-1), n, ctx.momentum, ctx.profile)
    (bm, bv), = tolerance.running_bounds(ctx.model, [x], ctx.momentum, ctx.profile, ctx.fa, before, u)
    return bool(np.any(np.abs(new[0] - before[0]) > DISTINCT * bm) or np.any(np.abs(new[1] - before[1]) > DISTINCT * bv))


def _expected(ctx, mode, x, u):
    """(oracle output, its bound) of x in `mode` on the statistics the main trace left (ctx.eff)."""
    rm, rv = _stats_before_eval(ctx)
    if mode == "eval" and rm is not None:
        return eval_expected(ctx, x, rm, rv, u)
    # training, or eval without running statistics, which normalizes as training does
    y = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.eff)[0]
    return y, tolerance.y_train_bound(ctx.model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, y,
                                      _placement(ctx, ctx.eff))


@check("mode_switch", emits=("BN-MODE-SWITCH",))
def mode_switch(ctx: Ctx):
    """A probe's output is blamed only on positive evidence: it is further from the same mode's
    main output than twice the bound AND nearer the other mode's oracle output than its own
    mode's (a grad mode that picks another kernel, of another rounding, is no mode switch)."""
    t, case = ctx.trace, ctx.case
    if not any(_prefix(m, g) + k in t for m, g in PROBES for k in ("y", "error")):
        return []
    if case.special != "none" or not _trainable_case(ctx) or "eval/y" not in t or "train_0/y" not in t:
        return []
    u = ctx.u_out(t.get("eval/y_dtype", case.dtype))
    before = _stats(t, "eval/")
    problems, worst, deviated = [], None, set()
    for mode, grad in PROBES:
        pre, how = _prefix(mode, grad), f"{'an' if mode == 'eval' else 'a'} {mode}-mode call with gradients " \
                                         f"{'on' if grad else 'off'}"
        if pre + "error" in t:
            e = t[pre + "error"]
            problems.append(f"{how} raised {e['type']}: {e['message'][:200]}")
            break
        x = ctx.arrays["x_eval" if mode == "eval" else "x_train_0"]
        _, bound = _expected(ctx, mode, x, u)
        other, other_bound = _expected(ctx, "train" if mode == "eval" else "eval", x, u)
        main = np.asarray(t["eval/y" if mode == "eval" else "train_0/y"], np.float64)
        cmp = compare(t[pre + "y"], main, 2 * np.asarray(bound), f"{how} against the main {mode} call", key=pre + "y")
        to_other = compare(t[pre + "y"], other, other_bound)
        after = _stats(t, pre)
        if not cmp.ok and to_other.ratio < cmp.ratio:
            worst = cmp if worst is None else worst
            deviated.add((mode, grad))
            problems.append(f"{how} gave the other mode's output ({to_other.ratio:.3g}x its bound from the "
                            f"{'batch' if mode == 'eval' else 'running'}-statistics output, {cmp.ratio:.3g}x from "
                            f"the main {mode} call's)")
        if mode == "eval" and not _same(before, after):
            deviated.add((mode, grad))
            problems.append(f"{how} changed the running statistics")
        if mode == "train" and before is not None and after is not None and _same(before, after) \
                and _update_shows(ctx, before, x, u):
            problems.append(f"{how} left the running statistics as they were")
        before = after if after is not None else before
    # the grad-off eval agreed and the grad-on one did not: the mode follows the grad mode
    measured = {"mode_follows": "grad_mode"} if ("eval", True) in deviated and ("eval", False) not in deviated else {}
    return [Outcome("BN-MODE-SWITCH", not problems, worst, "; ".join(problems), measured)]

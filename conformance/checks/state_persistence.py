"""BN-STATE-PERSIST: the running statistics are part of the layer's saved state and move with it.

The trace calls the trained layer in eval, saves it the framework's way, loads it into a fresh
layer and calls that in eval on the same batch (state/…), then converts it to float64 the
framework's way (convert/…). The loaded
layer must hold the very statistics the trained one had (a checkpoint is bytes, so bitwise) and
give its eval output; after the conversion the statistics must have the parameters' dtype.
"""
from __future__ import annotations

import numpy as np

from bnconf.checks.context import Ctx, Outcome, _eval_tracked, _trainable_case, eval_expected, raised_text
from bnconf.checks.registry import check
from bnconf.reference.comparison import compare


@check("state_persistence", emits=("BN-STATE-PERSIST",))
def state_persistence(ctx: Ctx):
    """The conversion is judged on every case the probes ran on (the dtype a buffer has does not
    depend on the data); the save/load round trip on cases with finite, trainable statistics."""
    t = ctx.trace
    if not any(k.startswith(("state/", "convert/")) for k in t) or not _eval_tracked(ctx):
        return []
    for phase, what in (("state/", "saving and loading the layer"), ("convert/", "converting the layer to float64")):
        e = t.get(phase + "error")
        if e is not None:
            return [Outcome("BN-STATE-PERSIST", False, note=f"{what} raised {e['type']}: {e['message'][:300]}",
                            raised=raised_text(e))]
    problems, cmp, measured = [], None, {}
    before = (t.get("state/before_running_mean"), t.get("state/before_running_var"))
    after = (t.get("state/running_mean"), t.get("state/running_var"))
    if ctx.case.special == "none" and _trainable_case(ctx) and before[0] is not None and after[0] is not None:
        lost = [q for q, b, a in zip(("mean", "variance"), before, after) if not np.array_equal(b, a, equal_nan=True)]
        if lost:
            measured["saved_state"] = "misses_running_stats"
            problems.append(f"the running {' and '.join(lost)} did not survive save and load: the fresh layer holds "
                            f"{np.round(after[0][:3], 4).tolist()}/{np.round(after[1][:3], 4).tolist()} (first "
                            f"channels) instead of {np.round(before[0][:3], 4).tolist()}/"
                            f"{np.round(before[1][:3], 4).tolist()}: they are not part of the saved state")
        else:
            cmp = compare(t["state/y"], np.asarray(t["state/before_y"], np.float64),
                          2 * np.asarray(eval_expected(ctx, ctx.arrays["x_eval"], *before,
                                                       ctx.u_out(t.get("eval/y_dtype", ctx.case.dtype)))[1]),
                          "eval output of the loaded layer against the trained one's", key="state/y")
            if not cmp.ok:
                problems.append("the loaded layer's eval output differs from the trained layer's")
    param, stats = t.get("convert/param_dtype"), t.get("convert/stats_dtype")
    if param not in (None, "none") and stats not in (None, "none") and param != stats:
        measured["conversion"] = f"running_stats_stay_{stats}"   # BN-DTYPE-F64 of such a layer is this root's
        problems.append(f"after converting the layer to float64 its parameters are {param} but its running "
                        f"statistics stay {stats}")
    if cmp is None and not problems and param is None:
        return []
    return [Outcome("BN-STATE-PERSIST", not problems, cmp, "; ".join(problems), measured)]

"""Batches without a variance to normalize by: one value per channel (BN-ONE-VALUE: raise or
return beta, as the profile says) and an empty batch (BN-EMPTY-BATCH)."""
from __future__ import annotations

import numpy as np

from bnconf.checks.context import Ctx, Outcome, raised_text
from bnconf.checks.registry import check
from bnconf.checks.running_statistics import _init_state
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare


def _train_error(ctx):
    """The trace's error unless it is an eval mode the implementation does not have (a stateless
    op): these clauses judge the training step, which ran."""
    err = ctx.trace.get("error")
    if err and err["unsupported"] and err["phase"].startswith("eval"):
        return None
    return err


# The process running the implementation died or hung: never the clear error a profile expects
# (an implementation that segfaults on one value per channel does not "raise").
NOT_RAISED = ("ProcessDied", "CallTimeout")


def _died(err, clause):
    if err and err["type"] in NOT_RAISED:
        return [Outcome(clause, False, note=f"{err['type']} in {err['phase']}: {err['message'][:300]}",
                        raised=raised_text(err))]
    return None


@check("one_value", emits=("BN-ONE-VALUE",))
def one_value(ctx: Ctx):
    case = ctx.case
    if case.n_per_channel != 1 or case.shape[0] == 0 or case.special in ("nan", "inf"):
        return []
    err = _train_error(ctx)
    if err and err["unsupported"]:
        return []
    died = _died(err, "BN-ONE-VALUE")
    if died:
        return died
    want = ctx.profile.one_value_per_channel
    raised = err is not None and err["phase"] == "train_0"
    if want == "raises":
        ok = raised
        return [Outcome("BN-ONE-VALUE", ok, note=(f"raised {err['type']}: {err['message'][:200]}" if raised else
                                                 "returned instead of raising"), measured={
            "one_value_per_channel": "raises" if raised else _one_value_kind(ctx)})]
    if raised:
        return [Outcome("BN-ONE-VALUE", False, note=f"raised {err['type']}: {err['message'][:200]}",
                        measured={"one_value_per_channel": "raises"}, raised=raised_text(err))]
    kind = _one_value_kind(ctx)
    y = ctx.trace.get("train_0/y")
    # beta under the spec's forward conventions; under a variant (a root's measured convention,
    # blocking.py) whatever that convention gives, NaN for eps absent included
    exp = oracle.train_forward(ctx.arrays["x_train_0"], ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
    u = ctx.u_out(ctx.trace.get("train_0/y_dtype", case.dtype))
    bound = tolerance.y_train_bound(ctx.model, ctx.arrays["x_train_0"], ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, exp)
    cmp = compare(y, exp, bound, "training output with n = 1", key="train_0/y")
    stats_ok = all(np.all(np.isfinite(ctx.trace[k])) for k in ctx.trace if k.startswith("train_0/running"))
    ok = cmp.ok and stats_ok
    return [Outcome("BN-ONE-VALUE", ok, cmp, "" if stats_ok else "non-finite running statistics",
                    {"one_value_per_channel": kind})]


def _one_value_kind(ctx):
    y = ctx.trace.get("train_0/y")
    if y is None:
        return "other"
    y = np.asarray(y, np.float64)
    if not np.all(np.isfinite(y)):
        return "non_finite"
    beta = np.zeros(ctx.case.num_features) if ctx.bias is None else np.asarray(ctx.bias, np.float64)
    exp = np.broadcast_to(oracle._per_feature(beta, ctx.case.rank, ctx.fa), ctx.case.shape)
    return "returns_beta" if np.allclose(y, exp, rtol=1e-2, atol=1e-3) else "other"


@check("empty_batch", emits=("BN-EMPTY-BATCH",))
def empty_batch(ctx: Ctx):
    if ctx.case.shape[0] != 0:
        return []
    err = _train_error(ctx)
    if err and err["unsupported"]:
        return []
    died = _died(err, "BN-EMPTY-BATCH")
    if died:
        return died
    if err:
        ok = bool(err["message"].strip())
        return [Outcome("BN-EMPTY-BATCH", ok, note=f"raised {err['type']}: {err['message'][:200]}")]
    y = ctx.trace.get("train_0/y")
    shape_ok = y is not None and np.shape(y) == ctx.case.shape
    stats_ok = all(np.all(np.isfinite(v)) for k, v in ctx.trace.items() if "/running_" in k)
    note = [] if shape_ok else [f"output shape {np.shape(y)} for input {ctx.case.shape}"]
    if not stats_ok:
        note.append("non-finite running statistics after an empty batch")
    moved = [q for q, before in zip(("running_mean", "running_var"), _init_state(ctx))
             if f"train_0/{q}" in ctx.trace and stats_ok
             and not np.array_equal(np.asarray(ctx.trace[f"train_0/{q}"], np.float64), before)]
    if moved:
        note.append(f"an empty batch changed the {' and '.join(moved)} (finite, but no batch was seen)")
    return [Outcome("BN-EMPTY-BATCH", shape_ok and stats_ok and not moved, note="; ".join(note))]

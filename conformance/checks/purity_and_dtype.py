"""What a call promises besides its numbers: its inputs left as they were (BN-PURE), and an
output of the input's dtype and shape (BN-DTYPE-OUTPUT)."""
from __future__ import annotations

import numpy as np

from bnconf.checks.context import Ctx, Outcome
from bnconf.checks.registry import check


@check("purity", emits=("BN-PURE",))
def purity(ctx: Ctx):
    flags = {k: v for k, v in ctx.trace.items() if k.endswith("/mutated")}
    if not flags:
        return []
    bad = sorted(k.split("/")[0] for k, v in flags.items() if v)
    return [Outcome("BN-PURE", not bad, note=f"inputs mutated by the call in {bad}" if bad else "")]


@check("output_dtype", emits=("BN-DTYPE-OUTPUT",))
def output_dtype(ctx: Ctx):
    outs, measured = [], {}
    for k in [f"train_{i}" for i in range(ctx.case.steps)] + ["eval"]:
        if f"{k}/y" not in ctx.trace:
            continue
        dt, shape = ctx.trace[f"{k}/y_dtype"], np.shape(ctx.trace[f"{k}/y"])
        if dt != ctx.case.dtype or shape != ctx.case.shape:
            outs.append(f"{k}: {dt}{list(shape)} for a {ctx.case.dtype}{list(ctx.case.shape)} input")
            # the kind of deviation (what a known entry matches) must not depend on the case's shape
            measured.setdefault("output_dtype", dt if dt != ctx.case.dtype else "same")
            if shape != ctx.case.shape:
                measured.setdefault("output_shape", "other")
    if not any(f"{k}/y" in ctx.trace for k in ["train_0", "eval"]):
        return []
    return [Outcome("BN-DTYPE-OUTPUT", not outs, note="; ".join(outs), measured=measured)]

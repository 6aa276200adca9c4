"""The single-device checks by name and what each can emit; running every check on one case.

The family modules register their checks with @check; bnconf.checks imports them in the
order their outcomes are produced (run_checks feeds each check's measured conventions to the
ones after it)."""
from __future__ import annotations

import traceback
from typing import Callable

from bnconf.checks.context import Ctx, Outcome, raised_text

CHECKS: dict[str, Callable] = {}
EMITS: dict[str, tuple[str, ...]] = {}
# what numeric_attribution can name instead of the check's own clause (float32(eps) is an eps
# placement finding); every check that calls it declares them (lint_emissions holds it to that)
NUMERIC = ("BN-DTYPE-F64", "BN-DTYPE-ACCUM", "BN-VAR-STABLE", "BN-EPS-INSIDE")


def check(*names, emits=()):
    def deco(fn):
        for n in names:
            CHECKS[n] = fn
        EMITS[fn.__name__] = tuple(emits)
        return fn
    return deco


def run_checks(ctx: Ctx, emitted: dict | None = None) -> list[Outcome]:
    """Every distinct check once; outcomes only for clauses that apply to the profile.
    `emitted` (check function name -> clause IDs) collects what each check really emitted,
    before the profile's filter: the lint holds the spec and EMITS to it."""
    err = ctx.trace.get("error")
    if err and err["phase"] == "build":
        if err["unsupported"]:
            return []
        return [Outcome("BN-NORMALIZE", False, note=f"building the layer raised {err['type']}: {err['message']}",
                        raised=raised_text(err))]
    seen, out = set(), []
    for fn in CHECKS.values():
        if fn in seen:
            continue
        seen.add(fn)
        try:
            res = fn(ctx)
        except Exception as exc:  # a bug in a check must not hide the others: every clause it judges is an error
            tb = traceback.format_exc()
            res = [Outcome(c, False, note=f"check {fn.__name__} crashed: {type(exc).__name__}: {exc}", error=tb)
                   for c in EMITS.get(fn.__name__, ())]
        if emitted is not None:
            emitted.setdefault(fn.__name__, set()).update(o.clause for o in res if o.error is None)
        out.extend(o for o in res if o.clause in ctx.applicable)
        measured = {k: v for o in res if not o.ok for k, v in o.measured.items() if k in ctx.profile.conventions
                    and v in ctx.spec.conventions[k]["values"]}
        if measured:
            ctx.eff = ctx.eff.with_convention(**measured)
    return out

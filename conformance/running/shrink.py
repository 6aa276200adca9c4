"""Shrinking a failing case: smaller shapes, fewer steps, simpler values, deterministic and
cheap, while the clause still fails."""
from __future__ import annotations

import numpy as np

from bnconf.cases.case import Case
from bnconf.cases.strategies import KAPPAS


def greedy_shrink(case, candidates, fails, budget: int):
    """Greedy shrink of a failing case: take the first smaller candidate that still fails,
    until none does or the budget is spent. `fails(case)` returns the failing outcome or
    None; deterministic and cheap; returns (case, outcome)."""
    best, best_out = case, fails(case)
    if best_out is None:
        return case, None
    tried, improved = 0, True
    while improved and tried < budget:
        improved = False
        for cand in candidates(best):
            tried += 1
            if tried > budget:
                break
            o = fails(cand)
            if o is not None:
                best, best_out, improved = cand, o, True
                break
    return best, best_out


def pool_candidates(pool):
    """The pool's smaller layouts first (already compiled), then every other simplification."""
    def from_pool(c: Case):
        size = int(np.prod(c.shape))
        smaller = sorted((s for s, fa, dt in pool if fa == c.feature_axis and dt == c.dtype
                          and int(np.prod(s)) < size and len(s) == len(c.shape)), key=lambda s: int(np.prod(s)))
        for s in smaller:
            yield c.replace(shape=tuple(s))
        for cand in candidates(c):
            if cand.shape == c.shape:
                yield cand
    return from_pool


def candidates(c: Case):
    shape = list(c.shape)
    for a in range(len(shape)):
        if a == c.feature_axis or shape[a] <= 1:
            continue
        for new in (max(shape[a] // 2, 1), shape[a] - 1):
            s = shape.copy()
            s[a] = new
            if int(np.prod(s)) // max(c.num_features, 1) >= min(2, c.n_per_channel) or c.n_per_channel <= 1:
                yield c.replace(shape=tuple(s))
    if shape[c.feature_axis] > 1:
        s = shape.copy()
        s[c.feature_axis] = max(1, shape[c.feature_axis] // 2)
        yield c.replace(shape=tuple(s), special_channel=0)
    if c.steps > 1:
        yield c.replace(steps=c.steps - 1)
    if c.log_scale != 0.0:
        yield c.replace(log_scale=0.0)
    if c.kappa > 0:
        lower = [k for k in KAPPAS if k < c.kappa]
        if lower:
            yield c.replace(kappa=lower[-1])
    if c.affine == "random":
        yield c.replace(affine="default")
    if c.memory_format != "contiguous":
        yield c.replace(memory_format="contiguous")
    if c.seed != 0:
        yield c.replace(seed=0)

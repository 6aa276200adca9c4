"""Regressions and the clauses' sharpest probes, pinned so that every run exercises them
(hypothesis @example), each adapted to an implementation's layout and capabilities."""
from __future__ import annotations

from bnconf.adapters._protocol import Capabilities, SyncCapabilities
from bnconf.cases.case import DEFAULT, Case
from bnconf.cases.layouts import LAYOUTS, allowed
from bnconf.cases.strategies import feature_axis, fits
from bnconf.cases.sync_case import SyncCase

PINNED = [
    # one-pass variance at |mean|/std = 1e4 (google/flax#1491, tensorflow/tensorflow#118701)
    dict(seed=1, shape=(8, 4, 6, 6), dtype="float32", kappa=1e4, eps=1e-5, momentum=0.1),
    # |mean|/std = 100 is where the float32 one-pass variance leaves the model
    dict(seed=2, shape=(16, 3, 4, 4), dtype="float32", kappa=100.0, eps=1e-5, momentum=0.1),
    # n = 2: biased vs unbiased running variance differ by 2x (keras-team/keras#8982)
    dict(seed=3, shape=(2, 5), dtype="float32", kappa=0.0, eps=1e-3, momentum=0.5, steps=2),
    # one value per channel (pytorch/pytorch#4534)
    dict(seed=4, shape=(1, 3, 1, 1), dtype="float32", eps=1e-5, momentum=0.1),
    # variance comparable to eps: eps placement shows (keras-team/keras#8726)
    dict(seed=5, shape=(4, 3, 5, 5), dtype="float32", log_scale=-3.0, eps=1e-5, momentum=0.1),
    # framework defaults for eps and momentum, and default initialisation
    dict(seed=6, shape=(4, 6, 3, 3), dtype="float32", eps=DEFAULT, momentum=DEFAULT, affine="default", steps=3),
    # float16 statistics (chainer/chainer#6323) and float64 end to end
    dict(seed=7, shape=(8, 4, 8, 8), dtype="float16", kappa=10.0, eps=1e-3, momentum=0.1),
    dict(seed=8, shape=(8, 4, 4, 4), dtype="float64", kappa=3.0, eps=1e-5, momentum=0.1),
]


def pinned_for(caps: Capabilities) -> list[Case]:
    out = []
    for p in PINNED:
        p = dict(p)
        shape = p.pop("shape")
        for rank_shape in (shape, shape[:2] + shape[2:3] if len(shape) > 2 else shape):
            if len(rank_shape) not in caps.ranks:
                continue
            for where in caps.feature_axes:
                fa = feature_axis(len(rank_shape), where)
                s = list(rank_shape)
                if fa != 1:  # move the channel count to the last axis
                    s[1], s[fa] = s[fa], s[1]
                c = Case(shape=tuple(s), feature_axis=fa, **p)
                c = c.replace(grads=bool(caps.grads))
                if fits(c, caps):
                    out.append(c)
                    break
            else:
                continue
            break
        else:
            if caps.layouts:   # a declared scope keeps every probe, in the first layout it admits
                c = _in_declared_layout(shape, p, caps)
                if c is not None:
                    out.append(c)
    return out


def _in_declared_layout(shape, p, caps):
    """A pinned probe's (N, C, *spatial) shape given the rank and feature axis of a declared
    layout: spatial sizes kept where the rank allows, 2 where it adds axes."""
    n, c, spatial = shape[0], shape[1], tuple(shape[2:])
    for name in allowed(caps):
        rank, where = LAYOUTS[name]
        inner = (spatial + (2,) * rank)[:rank - 2]
        s = (n, c) + inner if where == "first" else (n,) + inner + (c,)
        case = Case(shape=s, feature_axis=feature_axis(rank, where), **p).replace(grads=bool(caps.grads))
        if fits(case, caps):
            return case
    return None



# Pinned cross-replica probes (hypothesis @example), adapted by `sync_pinned_for`.
SYNC_PINNED = [
    # even split, 8 replicas: the global batch is 8x each replica's
    dict(seed=11, counts=(2,) * 8, inner=(3,), kappa=1.0),
    # very uneven split: unweighted averaging of replica statistics is far off here
    # (pytorch/pytorch#22192; flax's pmean of masked means)
    dict(seed=12, counts=(1, 7, 2), inner=(2, 2, 4), kappa=3.0),
    # one-pass variance over the global batch at |mean|/std = 100
    dict(seed=13, counts=(4, 4), inner=(4, 4, 3), kappa=100.0),
]


def sync_pinned_for(caps: SyncCapabilities) -> list:
    out = []
    for p in SYNC_PINNED:
        counts = tuple(p["counts"])
        R = len(counts)
        lo, hi = caps.replicas
        if not lo <= R <= hi:
            continue
        uneven = len(set(counts)) > 1
        if uneven and not (caps.ragged or caps.mask):
            continue
        inner = tuple(p["inner"])
        rank = 1 + len(inner)
        if rank not in caps.ranks:
            inner = inner[-1:] if 2 in caps.ranks else (1, 1, inner[-1])
            rank = 1 + len(inner)
        where = "last" if "last" in caps.feature_axes else "first"
        if where == "first":
            inner = inner[-1:] + inner[:-1]
        masked = bool(uneven and not caps.ragged)
        rows = (max(counts),) * R if masked else counts
        out.append(SyncCase(seed=p["seed"], counts=counts, rows=rows, inner=inner,
                            feature_axis=1 if where == "first" else rank - 1, dtype=sorted(caps.dtypes)[-1]
                            if "float32" not in caps.dtypes else "float32", momentum=0.1, eps=1e-5,
                            kappa=p["kappa"], masked=masked))
    return out

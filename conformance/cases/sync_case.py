"""A cross-replica case: one training step of a layer on R replicas.

Like `case.Case`, a few drawn parameters plus a seed; `materialize` makes the per-replica
arrays with NumPy, deterministically. Replica r holds `rows[r]` rows along the batch axis,
of which `counts[r]` are real. Ragged engines (torch.distributed, MirroredStrategy) get
exactly the real rows; engines that need equal shapes (pmap, shard_map) get every replica
padded to the same rows with a mask, and the padding holds large garbage values so that an
implementation that lets masked elements into its statistics is caught at once.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from bnconf.cases.case import affine_params, cast, channel_moments

PAD_VALUE_SCALE = 1e3   # padding is drawn around +-1e3 std: any leak moves the statistics


@dataclass(frozen=True)
class SyncCase:
    seed: int
    counts: tuple[int, ...]        # real rows per replica (len = replicas)
    rows: tuple[int, ...]          # rows each replica's array holds (>= counts; equal when masked)
    inner: tuple[int, ...]         # non-batch dimensions, feature axis included
    feature_axis: int              # index into the full shape (1 = channels first)
    dtype: str = "float32"
    momentum: float = 0.1
    eps: float = 1e-5
    kappa: float = 1.0
    log_scale: float = 0.0
    affine: str = "random"         # "random" | "default"
    masked: bool = False           # the implementation is given a mask (pad rows are masked out)
    centred: bool = False          # every replica's rows shifted by the global batch's sample mean (evidence)

    @property
    def replicas(self) -> int:
        return len(self.counts)

    @property
    def shape(self) -> tuple[int, ...]:
        """The global batch's shape (every real row of every replica)."""
        return (sum(self.counts),) + tuple(self.inner)

    @property
    def rank(self) -> int:
        return 1 + len(self.inner)

    @property
    def num_features(self) -> int:
        return self.shape[self.feature_axis]

    @property
    def n_global(self) -> int:
        return int(np.prod(self.shape)) // max(self.num_features, 1)

    @property
    def even(self) -> bool:
        return len(set(self.counts)) == 1 and not self.masked

    @property
    def steps(self) -> int:   # one training step; the engine's tallies and shrinking read this
        return 1

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("counts", "rows", "inner"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict) -> "SyncCase":
        d = dict(d)
        for k in ("counts", "rows", "inner"):
            d[k] = tuple(d[k])
        d.setdefault("centred", False)   # cases pinned before the field existed
        return cls(**d)

    def replace(self, **kw) -> "SyncCase":
        return replace(self, **kw)

    def describe(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def materialize(case: SyncCase) -> dict:
    """x[r], dy[r], mask[r] per replica (lists), x_global/dy_global (real rows, replica order),
    and weight/bias when the case sets them. Masked rows get dy = 0, so the summed loss is
    the loss of the real rows alone."""
    rng = np.random.default_rng(case.seed)
    mean, std = channel_moments(rng, case)
    xs, dys, masks, reals, real_x, real_dy = [], [], [], [], [], []
    for n_real, n_rows in zip(case.counts, case.rows):
        shape = (n_rows,) + tuple(case.inner)
        x = mean + std * rng.standard_normal(shape)
        dy = rng.standard_normal(shape)
        real = np.zeros(n_rows, bool)
        real[rng.permutation(n_rows)[:n_real]] = True   # real rows anywhere, not only first
        pad = ~real
        x[pad] = mean + std * PAD_VALUE_SCALE * rng.standard_normal((int(pad.sum()),) + tuple(case.inner))
        dy[pad] = 0.0
        xs.append(x)
        dys.append(dy)
        reals.append(real)
    if case.centred:     # the global batch's own sample mean removed, per channel, from every row
        fa = case.feature_axis % case.rank
        real_rows = np.concatenate([x[r] for x, r in zip(xs, reals)], axis=0)
        axes = tuple(a for a in range(case.rank) if a != fa)
        if real_rows.size:
            mu = real_rows.mean(axis=axes, keepdims=True)
            xs = [x - mu for x in xs]
    xs_in, dys_in, reals_in = xs, dys, reals
    xs, dys, reals = [], [], []
    for x, dy, real, n_rows in zip(xs_in, dys_in, reals_in, case.rows):
        shape = (n_rows,) + tuple(case.inner)
        x, dy = cast(x, case.dtype), cast(dy, case.dtype)
        xs.append(x)
        dys.append(dy)
        masks.append(np.broadcast_to(real.reshape((-1,) + (1,) * len(case.inner)), shape).copy())
        reals.append(real)
        real_x.append(x[real])
        real_dy.append(dy[real])
    out = {"x": xs, "dy": dys, "mask": masks, "real": reals,
           "x_global": np.concatenate(real_x, axis=0), "dy_global": np.concatenate(real_dy, axis=0)}
    if case.affine == "random":
        out["weight"], out["bias"] = affine_params(rng, case.num_features, case.dtype)
    return out

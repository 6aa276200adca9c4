"""A conformance case: drawn parameters plus a seed. Arrays are made from the seed with NumPy.

A case is small and hashable so that hypothesis can shrink it and a failure can be
reproduced from its JSON alone; `materialize` turns it into arrays deterministically.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np

DEFAULT = "default"  # use the implementation's own default (eps, momentum, weight init)


@dataclass(frozen=True)
class Case:
    seed: int
    shape: tuple[int, ...]          # logical shape, feature axis included
    feature_axis: int               # non-negative index into shape
    dtype: str = "float32"
    steps: int = 2                  # training steps before eval
    affine: str = "random"          # "random" | "default" (framework init) | "off"
    momentum: float | None | str = 0.1
    eps: float | str = 1e-5
    kappa: float = 1.0              # worst |mean|/std over channels
    log_scale: float = 0.0          # std ~ 10**log_scale
    special: str = "none"           # "none" | "constant" | "nan" | "inf"
    special_channel: int = 0
    track_running_stats: bool = True
    memory_format: str = "contiguous"   # or "channels_last" (a physical layout only)
    grads: bool = True
    centred: bool = False           # the same data with each channel's sample mean removed (evidence)

    @property
    def num_features(self) -> int:
        return self.shape[self.feature_axis]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def n_per_channel(self) -> int:
        return int(np.prod(self.shape)) // max(self.num_features, 1)

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Case":
        d = dict(d)
        d.setdefault("centred", False)   # cases pinned before the field existed
        d["shape"] = tuple(d["shape"])
        return cls(**d)

    def replace(self, **kw) -> "Case":
        return replace(self, **kw)

    def describe(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def centred(case: Case) -> Case:
    """The same case's data with every channel's sample mean removed (a constant channel becomes
    exactly 0): what a variance algorithm's loss of precision must disappear on."""
    return case.replace(kappa=0.0, centred=True)


def in_layout(case: Case, feature_axis: int) -> Case:
    """The same case with its channel dimension moved to `feature_axis` (channels first or
    last): what an implementation that ignores the axis it is given would get right."""
    shape = list(case.shape)
    channels = shape.pop(case.feature_axis)
    axis = feature_axis % case.rank
    shape.insert(axis, channels)
    return case.replace(shape=tuple(shape), feature_axis=axis,
                        memory_format="contiguous" if axis != 1 else case.memory_format)


def round_to_bfloat16(a: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), kept in a float32 array."""
    a = np.asarray(a, np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    out = ((bits + rounding) >> 16 << 16).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(a), out, a)


def cast(a: np.ndarray, dtype: str) -> np.ndarray:
    """Arrays of a case in its dtype; bfloat16 values travel in float32 arrays (exactly)."""
    if dtype == "bfloat16":
        return round_to_bfloat16(np.asarray(a, np.float32))
    return np.asarray(a, dtype)


def _channel_index(case: Case, c) -> tuple:
    idx = [slice(None)] * case.rank
    idx[case.feature_axis] = c
    return tuple(idx)


def channel_moments(rng, case) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of a case's data, shaped to broadcast along its feature axis:
    std ~ 10^log_scale, |mean|/std up to kappa, and one channel exactly at kappa (shared by
    single-device and cross-replica cases; the draw order is part of the seed's meaning)."""
    C = case.num_features
    shape_c = [1] * case.rank
    shape_c[case.feature_axis] = C
    std = (10.0 ** case.log_scale) * rng.uniform(0.5, 2.0, C)
    kap = case.kappa * rng.uniform(0.5, 1.0, C)
    if C:
        kap[rng.integers(C)] = case.kappa      # the worst channel reaches kappa exactly
    mean = kap * std * rng.choice([-1.0, 1.0], C)
    return mean.reshape(shape_c), std.reshape(shape_c)


def affine_params(rng, C: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Random gamma (|gamma| in [0.25, 2], either sign) and beta, in the case's dtype."""
    return (cast(rng.uniform(0.25, 2.0, C) * rng.choice([-1.0, 1.0], C), dtype),
            cast(rng.normal(0.0, 1.0, C), dtype))


def materialize(case: Case) -> dict[str, np.ndarray]:
    """Deterministic arrays for a case: x_train_0..steps-1, x_eval, dy_train, dy_eval,
    and weight/bias when the case sets them."""
    rng = np.random.default_rng(case.seed)
    C = case.num_features
    mean_b, std_b = channel_moments(rng, case)

    arrays: dict[str, np.ndarray] = {}

    axes = tuple(a for a in range(case.rank) if a != case.feature_axis)

    def batch() -> np.ndarray:
        x = mean_b + std_b * rng.standard_normal(case.shape)
        if case.centred and x.size:
            x = x - x.mean(axis=axes, keepdims=True)
        return cast(x, case.dtype)

    for k in range(case.steps):
        arrays[f"x_train_{k}"] = batch()
    arrays["x_eval"] = batch()
    arrays["dy_train"] = cast(rng.standard_normal(case.shape), case.dtype)
    arrays["dy_eval"] = cast(rng.standard_normal(case.shape), case.dtype)
    if case.affine == "random":
        arrays["weight"], arrays["bias"] = affine_params(rng, C, case.dtype)
    if case.special != "none" and C and case.shape[0] > 0:
        c = case.special_channel % C
        for k in range(case.steps):
            x = arrays[f"x_train_{k}"]
            if case.special == "constant":   # its designed mean: kappa = 0 centres it at exactly 0
                x[_channel_index(case, c)] = cast(mean_b.reshape(-1)[c: c + 1], case.dtype)[0]
            elif case.special in ("nan", "inf") and k == 0:
                sub = x[_channel_index(case, c)]
                sub.flat[rng.integers(sub.size)] = np.nan if case.special == "nan" else np.inf
                x[_channel_index(case, c)] = sub
    arrays.update(second_order_arrays(case))
    return arrays


def second_order_arrays(case: Case) -> dict[str, np.ndarray]:
    """v_train, the direction of BN-GRAD-GRAD's second backward pass, and `mask`, BN-MASK's
    positions (broadcast over the feature axis; True counts; at least two kept and one masked,
    so only where a channel has three positions or more). From their own generator: the
    arrays above are the same with or without them."""
    rng = np.random.default_rng([case.seed, 2])
    out = {"v_train": cast(rng.standard_normal(case.shape), case.dtype)}
    shape = tuple(1 if a == case.feature_axis else d for a, d in enumerate(case.shape))
    positions = int(np.prod(shape))
    if positions >= 3:
        order = rng.permutation(positions)
        keep = np.zeros(positions, bool)
        keep[order[: int(rng.integers(2, positions))]] = True
        out["mask"] = keep.reshape(shape)
    return out


def channel_kappa(x: np.ndarray, feature_axis: int) -> np.ndarray:
    """|mean|/std per channel of an actual array (what the tolerance model conditions on)."""
    x = np.asarray(x, np.float64)
    axes = tuple(a for a in range(x.ndim) if a != feature_axis)
    m = x.mean(axis=axes)
    s = x.std(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(s > 0, np.abs(m) / np.where(s > 0, s, 1), np.where(m == 0, 0.0, np.inf))
    return k

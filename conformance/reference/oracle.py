"""The float64 reference: Batch Normalization as the spec states it, in NumPy.

Read it against Ioffe & Szegedy 2015, Algorithm 1. Two-pass statistics, float64 throughout.
Each function cites the clauses it implements. It knows conventions (a Profile) and no
framework. The convention fields are parameters so that the engine can ask "would this
output match if the implementation followed the other convention?" (attribution).
"""
from __future__ import annotations

import numpy as np


def reduce_axes(ndim: int, feature_axis: int, reduction: str = "all_but_feature_axis") -> tuple[int, ...]:
    """BN-AXES: every axis except the feature axis (variant: the batch axis alone)."""
    if reduction == "batch_axis_only":
        return (0,)
    return tuple(a for a in range(ndim) if a != feature_axis % ndim)


def _per_feature(v: np.ndarray, ndim: int, feature_axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[feature_axis % ndim] = -1
    return np.asarray(v, np.float64).reshape(shape)


def batch_stats(x, feature_axis, reduction="all_but_feature_axis"):
    """BN-MEAN, BN-VAR-BIASED: two-pass mean and biased variance; returns (mean, var, n)."""
    x = np.asarray(x, np.float64)
    axes = reduce_axes(x.ndim, feature_axis, reduction)
    n = int(np.prod([x.shape[a] for a in axes]))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return mean, var, n


def normalize(x, mean, var, eps, weight, bias, feature_axis, eps_placement="inside_sqrt"):
    """BN-EPS-INSIDE, BN-AFFINE: y = gamma (x - mean) / sqrt(var + eps) + beta."""
    x = np.asarray(x, np.float64)
    if eps_placement == "inside_sqrt":
        x_hat = (x - mean) / np.sqrt(var + eps)
    elif eps_placement == "outside_sqrt":
        x_hat = (x - mean) / (np.sqrt(var) + eps)
    elif eps_placement == "absent":   # only for attributing a deviation (eps ignored), never a profile's
        x_hat = (x - mean) / np.sqrt(var)
    else:  # minus_inside_sqrt: only for attributing a deviation, never a conforming profile
        x_hat = (x - mean) / np.sqrt(var - eps)
    g = 1.0 if weight is None else _per_feature(weight, x.ndim, feature_axis)
    b = 0.0 if bias is None else _per_feature(bias, x.ndim, feature_axis)
    return g * x_hat + b


def train_forward(x, weight, bias, eps, feature_axis, profile):
    """Algorithm 1 under a profile's conventions; returns (y, flat batch mean, flat batch var, n)."""
    mean, var, n = batch_stats(x, feature_axis, profile.reduction)
    norm_var = var * n / (n - 1) if profile.normalize_variance == "unbiased" else var
    y = normalize(x, mean, norm_var, eps, weight, bias, feature_axis, profile.eps_placement)
    return y, mean, var, n


def momentum_weight(profile, momentum, step):
    """The momentum clauses: the weight w of the batch statistic in step `step` (1-based)."""
    if momentum is None and profile.cumulative_when_momentum_none:
        return 1.0 / step                                   # BN-MOMENTUM-CUMULATIVE
    if profile.momentum_form == "batch_weight":
        return float(momentum)                              # BN-MOMENTUM-BATCH-WEIGHT
    return 1.0 - float(momentum)                            # BN-MOMENTUM-OLD-WEIGHT / -DEBIASED


def update_running(state, batch_mean, batch_var, n, momentum, profile, fed_offset=0.0):
    """One training step's running-statistics update; `state` is (mean, var, hidden_mean,
    hidden_var, step). BN-RUNVAR-UNBIASED / -BIASED choose the variance estimator; the
    profile's `unbiased_factor` and `empty_batch_running_stats` say what n = 1 and n = 0 do;
    `fed_offset` (attribution only) is added to the variance the running one is fed."""
    mean, var, h_mean, h_var, step = state
    step += 1
    if n == 0 and profile.empty_batch_running_stats == "unchanged":   # BN-EMPTY-BATCH
        return (mean, var, h_mean, h_var, step)
    if profile.running_variance == "unbiased" and profile.unbiased_factor == "n_over_max_n_minus_1_1":
        batch_var = batch_var * n / max(n - 1, 1)                      # BN-ONE-VALUE: finite at n = 1
    elif profile.running_variance == "unbiased":
        batch_var = batch_var * n / (n - 1) if n > 1 else batch_var * np.nan
    elif profile.running_variance == "std":   # attribution only: a running std where the variance belongs
        batch_var = np.sqrt(batch_var)
    batch_var = batch_var + fed_offset
    w = momentum_weight(profile, momentum, step)
    if profile.momentum_form == "debiased_ema" and not (momentum is None and profile.cumulative_when_momentum_none):
        h_mean = (1 - w) * h_mean + w * batch_mean          # BN-MOMENTUM-DEBIASED
        h_var = (1 - w) * h_var + w * batch_var
        debias = 1.0 - float(momentum) ** step
        return (h_mean / debias, h_var / debias, h_mean, h_var, step)
    return ((1 - w) * mean + w * batch_mean, (1 - w) * var + w * batch_var, h_mean, h_var, step)


def grads_train(x, dy, weight, eps, feature_axis):
    """BN-GRAD-TRAIN: dx = gamma invstd / N (N dy - sum dy - x_hat sum(dy x_hat))."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    axes = reduce_axes(x.ndim, feature_axis)
    mean, var, n = batch_stats(x, feature_axis)
    invstd = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * invstd
    g = 1.0 if weight is None else _per_feature(weight, x.ndim, feature_axis)
    sum_dy = dy.sum(axis=axes, keepdims=True)
    sum_dy_xhat = (dy * x_hat).sum(axis=axes, keepdims=True)
    dx = g * invstd / n * (n * dy - sum_dy - x_hat * sum_dy_xhat)
    return dx, sum_dy_xhat.reshape(-1), sum_dy.reshape(-1)


def grads_eval(x, dy, weight, mean, var, eps, feature_axis):
    """BN-GRAD-EVAL: statistics are constants, dx = gamma dy / sqrt(var + eps)."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    axes = reduce_axes(x.ndim, feature_axis)
    m = _per_feature(mean, x.ndim, feature_axis)
    v = _per_feature(var, x.ndim, feature_axis)
    g = 1.0 if weight is None else _per_feature(weight, x.ndim, feature_axis)
    x_hat = (x - m) / np.sqrt(v + eps)
    return g * dy / np.sqrt(v + eps), (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


def grads_second_train(x, dy, v, weight, eps, feature_axis):
    """BN-GRAD-GRAD: the derivatives of F = sum(v * dx), dx the training gradient of
    L = sum(dy * y) (grads_train), with respect to x, gamma and dy. Per channel, with
    a = sum dy, b = sum dy x_hat, c = sum v dy, V = sum v, w = sum v x_hat, s = invstd:
      dF/dx_k  = -gamma s^2 / N [x_hat_k (c - aV/N - bw/N) + w (dy_k - a/N - b x_hat_k/N)
                                 + b (v_k - V/N - w x_hat_k/N)]
      dF/dgamma = s (c - aV/N - bw/N)
      dF/ddy_k = gamma s / N (N v_k - V - x_hat_k w)   (the first-order dx with dy -> v)."""
    x, dy, v = (np.asarray(a, np.float64) for a in (x, dy, v))
    axes = reduce_axes(x.ndim, feature_axis)
    mean, var, n = batch_stats(x, feature_axis)
    s = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * s
    g = 1.0 if weight is None else _per_feature(weight, x.ndim, feature_axis)

    def total(t):
        return t.sum(axis=axes, keepdims=True)
    a, b, c, V, w = total(dy), total(dy * x_hat), total(v * dy), total(v), total(v * x_hat)
    p = c - a * V / n - b * w / n
    ddx = -g * s * s / n * (x_hat * p + w * (dy - a / n - b * x_hat / n) + b * (v - V / n - w * x_hat / n))
    return ddx, (s * p).reshape(-1), grads_train(x, v, weight, eps, feature_axis)[0]


def kept_rows(x, mask, feature_axis):
    """BN-MASK: the unmasked positions of x as rows of an (n_kept, C) array; mask is
    broadcastable to x with the feature axis of size 1, True where a position counts."""
    x = np.asarray(x, np.float64)
    keep = np.moveaxis(np.broadcast_to(mask, x.shape), feature_axis % x.ndim, -1)[..., 0]
    return np.moveaxis(x, feature_axis % x.ndim, -1)[keep]


def masked_train_forward(x, mask, weight, bias, eps, feature_axis, profile):
    """BN-MASK: Algorithm 1 with the statistics of the unmasked positions, every position
    normalized with them; returns (y, flat mean, flat var, n kept)."""
    x = np.asarray(x, np.float64)
    mean, var, n = batch_stats(kept_rows(x, mask, feature_axis), 1)
    norm_var = var * n / (n - 1) if profile.normalize_variance == "unbiased" else var
    m, v = _per_feature(mean, x.ndim, feature_axis), _per_feature(norm_var, x.ndim, feature_axis)
    return normalize(x, m, v, eps, weight, bias, feature_axis, profile.eps_placement), mean.reshape(-1), \
        var.reshape(-1), n


def renorm_train(x, weight, bias, eps, feature_axis, state, momentum, renorm_momentum, clipping):
    """BN-RENORM: one training step of Batch Renormalization (Ioffe 2017, Algorithm 1). state is
    (moving mean, moving std, renorm mean, renorm std) per channel; the stds include eps,
    sigma_B = sqrt(var_B + eps). r = clip(sigma_B / sigma_R, rmin, rmax) and d = clip((mu_B -
    mu_R) / sigma_R, -dmax, dmax) (constants to the backward pass) correct the batch-normalized
    x_hat: y = gamma (r x_hat + d) + beta. sigma_R is at least sqrt(eps) (Keras: no division by
    a zero std early in training). Returns (y, new state, r, d); the moving variance the eval
    call normalizes with is max(moving std^2 - eps, 0)."""
    x = np.asarray(x, np.float64)
    mean, var, _ = batch_stats(x, feature_axis)
    mu_b, sigma_b = mean.reshape(-1), np.sqrt(var.reshape(-1) + eps)
    m_mean, m_std, r_mean, r_std = (np.asarray(a, np.float64) for a in state)
    sigma_r = np.maximum(r_std, np.sqrt(eps))
    r, d = sigma_b / sigma_r, (mu_b - r_mean) / sigma_r
    if clipping.get("rmin") is not None:
        r = np.maximum(r, clipping["rmin"])
    if clipping.get("rmax") is not None:
        r = np.minimum(r, clipping["rmax"])
    if clipping.get("dmax") is not None:
        d = np.clip(d, -clipping["dmax"], clipping["dmax"])
    x_hat = normalize(x, mean, var, eps, None, None, feature_axis)
    g = 1.0 if weight is None else _per_feature(weight, x.ndim, feature_axis)
    b = 0.0 if bias is None else _per_feature(bias, x.ndim, feature_axis)
    y = g * (x_hat * _per_feature(r, x.ndim, feature_axis) + _per_feature(d, x.ndim, feature_axis)) + b

    def ema(old, new, m):
        return m * old + (1 - m) * new
    new = (ema(m_mean, mu_b, momentum), ema(m_std, sigma_b, momentum), ema(r_mean, mu_b, renorm_momentum),
           ema(r_std, sigma_b, renorm_momentum))
    return y, new, r, d

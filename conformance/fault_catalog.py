"""A public catalog of seeded faults: functional BNs (bnconf NumPy protocol, torch profile)
that each carry one classic bug, with the clause that must catch it. `bnconf bench` and
tests/test_fault_catalog.py measure how many the default audit catches and how fast.
CORRECT lists implementations that must produce no finding (a float32 Welford kernel
among them), to measure false findings.
"""
from __future__ import annotations

import numpy as np


def _axes(x, axis):
    axis = axis % x.ndim
    shape = [1] * x.ndim
    shape[axis] = -1
    return axis, tuple(a for a in range(x.ndim) if a != axis), shape


def make(fault: str | None = None, dtype_compute=None):
    """A torch-profile BN with at most one fault switched on."""

    def bn(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
        axis_, axes, shape = _axes(x, axis)
        if fault == "wrong_feature_axis":
            axis_, axes, shape = _axes(x, 1)
        if fault == "wrong_axes":
            axes = (0,)
        xc = x.astype(dtype_compute) if dtype_compute else x
        n = xc.size // xc.shape[axis_] if not fault == "wrong_axes" else xc.shape[0]
        if training and n < 2:
            raise ValueError("expected more than 1 value per channel when training")
        use_batch = training or running_mean is None or fault == "eval_uses_batch_stats"
        if use_batch:
            mean = xc.mean(axis=axes, keepdims=True)
            if fault == "one_pass":
                var = (xc * xc).mean(axis=axes, keepdims=True) - mean * mean
            else:
                var = ((xc - mean) ** 2).mean(axis=axes, keepdims=True)
            if (training or fault == "updates_in_eval") and running_mean is not None and fault != "missing_update":
                bm, bv = mean.reshape(-1), var.reshape(-1)
                if fault == "wrong_axes":   # per-position statistics, averaged over positions per channel
                    other = tuple(a for a in range(1, x.ndim) if a != axis_)
                    bm, bv = mean.mean(axis=other).reshape(-1), var.mean(axis=other).reshape(-1)
                w = (1 - momentum) if fault == "flipped_momentum" else momentum
                fed = bv if fault == "biased_running_var" else bv * n / (n - 1)
                if fault == "running_std":
                    fed = np.sqrt(bv)
                running_mean = (1 - w) * running_mean + w * bm
                running_var = (1 - w) * running_var + w * fed
            if fault == "unbiased_normalize":
                var = var * n / (n - 1)
        else:
            mean, var = running_mean.reshape(shape), running_var.reshape(shape)
            if fault == "updates_in_eval":  # eval feeds the batch into the running statistics
                bm, bv = xc.mean(axis=axes), xc.var(axis=axes)
                running_mean = (1 - momentum) * running_mean + momentum * bm.reshape(-1)
                running_var = (1 - momentum) * running_var + momentum * bv.reshape(-1)
        if fault == "eps_outside_sqrt":
            y = (xc - mean) / (np.sqrt(var) + eps)
        elif fault == "eps_minus":
            y = (xc - mean) / np.sqrt(var - eps)
        elif fault == "no_eps":
            y = (xc - mean) / np.sqrt(var)
        else:
            y = (xc - mean) / np.sqrt(var + eps)
        if weight is not None and fault != "ignores_affine":
            y = y * weight.reshape(shape) + bias.reshape(shape)
        if fault == "mutates_input":
            x *= 1.0
            x.flat[0] = x.flat[0] + 1
        return y.astype(x.dtype), running_mean, running_var

    bn.__name__ = f"bn_{fault or 'correct'}"
    return bn


def welford_float32(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
    """Correct, with statistics by Welford's algorithm in float32 (must conform in float32)."""
    axis_, axes, shape = _axes(x, axis)
    n = x.size // x.shape[axis_]
    if training and n < 2:
        raise ValueError("expected more than 1 value per channel when training")
    if training or running_mean is None:
        rows = np.moveaxis(x, axis_, -1).reshape(-1, x.shape[axis_])
        acc = np.float64 if x.dtype == np.float64 else np.float32
        mean = np.zeros(x.shape[axis_], acc)
        m2 = np.zeros(x.shape[axis_], acc)
        for k, row in enumerate(rows.astype(acc), 1):
            d = row - mean
            mean = mean + d / acc(k)
            m2 = m2 + d * (row - mean)
        var = m2 / acc(n)
        if training and running_mean is not None:
            running_mean = (1 - momentum) * running_mean + momentum * mean
            running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)
        mean, var = mean.reshape(shape), var.reshape(shape)
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype), running_mean, running_var


# fault -> (what it is, the clauses it must be reported under: exactly these, everything else it
# breaks shown as blocked by them). wrong_axes is two findings on purpose: per-position statistics
# (BN-AXES) and raising on a batch of one although each channel holds several values (BN-NORMALIZE).
FAULTS = {
    "wrong_axes": ("statistics over the batch axis only (per-position BN)", {"BN-AXES", "BN-NORMALIZE"}),
    "wrong_feature_axis": ("ignores `axis`, always normalizes axis 1", {"BN-AXES"}),
    "eps_outside_sqrt": ("(x - mu) / (sqrt(var) + eps)", {"BN-EPS-INSIDE"}),
    "eps_minus": ("(x - mu) / sqrt(var - eps)", {"BN-EPS-INSIDE"}),
    "no_eps": ("eps dropped: (x - mu) / sqrt(var)", {"BN-EPS-INSIDE"}),
    "flipped_momentum": ("Keras-style momentum under the torch profile", {"BN-MOMENTUM-BATCH-WEIGHT"}),
    "biased_running_var": ("biased running variance under the torch profile", {"BN-RUNVAR-UNBIASED"}),
    "running_std": ("a running std fed where the variance belongs", {"BN-RUNVAR-UNBIASED"}),
    "unbiased_normalize": ("normalizes with the unbiased variance", {"BN-VAR-BIASED"}),
    "eval_uses_batch_stats": ("eval normalizes with batch statistics", {"BN-EVAL-RUNNING"}),
    "missing_update": ("running statistics never updated", {"BN-MOMENTUM-BATCH-WEIGHT"}),
    "updates_in_eval": ("eval updates the running statistics", {"BN-EVAL-NO-UPDATE"}),
    "one_pass": ("E[x^2] - E[x]^2 variance", {"BN-VAR-STABLE"}),
    "ignores_affine": ("gamma and beta ignored", {"BN-AFFINE"}),
    "mutates_input": ("writes into its input array", {"BN-PURE"}),
    "float32_compute": ("computes in float32 whatever the input", {"BN-DTYPE-F64"}),
}

CORRECT = {"two_pass": make(None), "welford_float32": welford_float32}


def faulty(name):
    if name == "float32_compute":
        return make(None, dtype_compute=np.float32)
    return make(name)

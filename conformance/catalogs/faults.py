"""A public catalog of seeded faults: functional BNs in the bnconf NumPy protocol, written in
two forms (FORMS: the torch profile's conventions and the keras profile's), each carrying one
classic bug, with the clauses it must be reported under and nothing else. `bnconf bench` and
tests/test_fault_catalog.py measure how exactly and how fast the default audit reports them.
CORRECT lists kernels that must produce no finding in either form (float64 arithmetic, two-pass
in the input's precision, float32 Welford), to measure false findings.
"""
from __future__ import annotations

import numpy as np


def _axes(x, axis):
    axis = axis % x.ndim
    shape = [1] * x.ndim
    shape[axis] = -1
    return axis, tuple(a for a in range(x.ndim) if a != axis), shape


# form -> (momentum weighs the batch, running variance unbiased, a batch of one value per
# channel raises); the profile each form is audited under has the same name
FORMS = {"torch": (True, True, True), "keras": (False, False, False)}


def make(fault: str | None = None, dtype_compute=None, form: str = "torch"):
    """A BN in `form`'s conventions with at most one fault switched on."""
    batch_weight, unbiased, raises = FORMS[form]
    if fault == "other_one_value":
        raises = not raises

    def bn(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
        if fault == "crash_affine_off" and weight is None:
            raise TypeError("unsupported operand type(s) for *: 'NoneType' and 'float'")
        axis_, axes, shape = _axes(x, axis)
        if fault == "wrong_feature_axis":
            axis_, axes, shape = _axes(x, 1)
        if fault == "wrong_axes":
            axes = (0,)
        xc = x.astype(dtype_compute) if dtype_compute else x
        n = xc.size // xc.shape[axis_] if not fault == "wrong_axes" else xc.shape[0]
        if training and n < 2 and raises:
            raise ValueError("expected more than 1 value per channel when training")
        if n == 0 and fault != "empty_batch_nan":   # an empty batch: nothing to normalize, nothing learnt
            return x.copy(), running_mean, running_var
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
                w = momentum if batch_weight == (fault != "flipped_momentum") else 1 - momentum
                other_estimator = fault == "biased_running_var"     # the other form's estimator
                fed = bv * n / max(n - 1, 1) if unbiased != other_estimator else bv   # TF's factor at n = 1
                if fault == "running_std":
                    fed = np.sqrt(bv)
                if fault == "running_var_plus_eps":
                    fed = fed + eps
                running_mean = (1 - w) * running_mean + w * bm
                running_var = (1 - w) * running_var + w * fed
            if fault == "unbiased_normalize":
                var = var * n / (n - 1)
        else:
            mean, var = running_mean.reshape(shape), running_var.reshape(shape)
            if fault == "updates_in_eval":  # eval feeds the batch into the running statistics
                bm, bv = xc.mean(axis=axes), xc.var(axis=axes)
                w = momentum if batch_weight else 1 - momentum
                running_mean = (1 - w) * running_mean + w * bm.reshape(-1)
                running_var = (1 - w) * running_var + w * bv.reshape(-1)
        if fault == "eval_no_eps" and not use_batch:
            y = (xc - mean) / np.sqrt(var)
        elif fault == "eps_twice":
            y = (xc - mean) / np.sqrt(var + eps + eps)
        elif fault == "eps_outside_sqrt":
            y = (xc - mean) / (np.sqrt(var) + eps)
        elif fault == "eps_minus":
            y = (xc - mean) / np.sqrt(var - eps)
        elif fault == "no_eps":
            y = (xc - mean) / np.sqrt(var)
        else:
            y = (xc - mean) / np.sqrt(var + eps)
        if weight is not None and fault != "ignores_affine":
            y = y * weight.reshape(shape) + bias.reshape(shape)
        if fault == "nan_leaks" and np.isnan(x).any():    # one NaN anywhere poisons every channel
            y = y + np.nan
        if fault == "mutates_input":
            x *= 1.0
            x.flat[0] = x.flat[0] + 1
        return y.astype(np.float64 if fault == "float64_output" else x.dtype), running_mean, running_var

    bn.__name__ = f"bn_{form}_{fault or 'correct'}"
    return bn


def welford(form: str = "torch"):
    """Correct, with statistics by Welford's algorithm in float32 (float64 for float64 input):
    must conform in float32, where it is as accurate as two passes."""
    batch_weight, unbiased, raises = FORMS[form]

    def welford_float32(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
        return _welford(x, weight, bias, running_mean, running_var, training, momentum, eps, axis,
                        batch_weight, unbiased, raises)
    return welford_float32


def _welford(x, weight, bias, running_mean, running_var, training, momentum, eps, axis, batch_weight, unbiased,
             raises):
    axis_, axes, shape = _axes(x, axis)
    n = x.size // x.shape[axis_]
    if training and n < 2 and raises:
        raise ValueError("expected more than 1 value per channel when training")
    if n == 0:
        return x.copy(), running_mean, running_var
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
            w = momentum if batch_weight else 1 - momentum
            running_mean = (1 - w) * running_mean + w * mean
            running_var = (1 - w) * running_var + w * (var * n / (n - 1) if unbiased else var)
        mean, var = mean.reshape(shape), var.reshape(shape)
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype), running_mean, running_var


# fault -> (what it is, {form: the clauses it must be reported under: exactly these, everything
# else it breaks shown as blocked by them}; a fault one form cannot have is absent from it).
# wrong_axes in the torch form is two findings on purpose: per-position statistics (BN-AXES) and
# raising on a batch of one although each channel holds several values (BN-NORMALIZE); the keras
# form returns beta there instead of raising.
_BOTH = lambda *c: {"torch": set(c), "keras": set(c)}   # noqa: E731
CATALOG = {
    "wrong_axes": ("statistics over the batch axis only (per-position BN)",
                   {"torch": {"BN-AXES", "BN-NORMALIZE"}, "keras": {"BN-AXES"}}),
    "wrong_feature_axis": ("ignores `axis`, always normalizes axis 1", _BOTH("BN-AXES")),
    "eps_outside_sqrt": ("(x - mu) / (sqrt(var) + eps)", _BOTH("BN-EPS-INSIDE")),
    "eps_minus": ("(x - mu) / sqrt(var - eps)", _BOTH("BN-EPS-INSIDE")),
    "no_eps": ("eps dropped: (x - mu) / sqrt(var)", _BOTH("BN-EPS-INSIDE")),
    "eval_no_eps": ("eps dropped in eval only: (x - running_mean) / sqrt(running_var)", _BOTH("BN-EPS-INSIDE")),
    "eps_twice": ("eps added twice: (x - mu) / sqrt(var + 2 eps)", _BOTH("BN-EPS-INSIDE")),
    "flipped_momentum": ("the other form's momentum convention",
                         {"torch": {"BN-MOMENTUM-BATCH-WEIGHT"}, "keras": {"BN-MOMENTUM-OLD-WEIGHT"}}),
    "biased_running_var": ("the other form's running-variance estimator",
                           {"torch": {"BN-RUNVAR-UNBIASED"}, "keras": {"BN-RUNVAR-BIASED"}}),
    "running_std": ("a running std fed where the variance belongs",
                    {"torch": {"BN-RUNVAR-UNBIASED"}, "keras": {"BN-RUNVAR-BIASED"}}),
    "running_var_plus_eps": ("var + eps fed into the running variance",
                             {"torch": {"BN-RUNVAR-UNBIASED"}, "keras": {"BN-RUNVAR-BIASED"}}),
    "unbiased_normalize": ("normalizes with the unbiased variance", _BOTH("BN-VAR-BIASED")),
    "eval_uses_batch_stats": ("eval normalizes with batch statistics", _BOTH("BN-EVAL-RUNNING")),
    "missing_update": ("running statistics never updated",
                       {"torch": {"BN-MOMENTUM-BATCH-WEIGHT"}, "keras": {"BN-MOMENTUM-OLD-WEIGHT"}}),
    "updates_in_eval": ("eval updates the running statistics", _BOTH("BN-EVAL-NO-UPDATE")),
    "one_pass": ("E[x^2] - E[x]^2 variance", _BOTH("BN-VAR-STABLE")),
    "ignores_affine": ("gamma and beta ignored", _BOTH("BN-AFFINE")),
    "crash_affine_off": ("raises when called without gamma and beta", _BOTH("BN-AFFINE-OFF")),
    "mutates_input": ("writes into its input array", _BOTH("BN-PURE")),
    "other_one_value": ("the other form's behaviour on one value per channel (raise / return beta)",
                        _BOTH("BN-ONE-VALUE")),
    "empty_batch_nan": ("an empty batch writes NaN running statistics (the keras form; the torch form "
                        "raises on it)", {"keras": {"BN-EMPTY-BATCH"}}),
    "nan_leaks": ("a NaN anywhere makes every output NaN", _BOTH("BN-NONFINITE-CONFINED")),
    "float64_output": ("returns float64 whatever the input dtype", _BOTH("BN-DTYPE-OUTPUT")),
    "float32_compute": ("computes in float32 whatever the input", _BOTH("BN-DTYPE-F64")),
}
FAULTS = {name: (desc, want["torch"]) for name, (desc, want) in CATALOG.items() if "torch" in want}   # torch form


# form -> name -> a correct kernel
CORRECT_FORMS = {form: {"two_pass": make(None, form=form), "two_pass_float64": make(None, np.float64, form),
                        "welford_float32": welford(form)} for form in FORMS}
CORRECT = CORRECT_FORMS["torch"]
welford_float32 = CORRECT["welford_float32"]


def faulty(name, form: str = "torch"):
    if name == "float32_compute":
        return make(None, dtype_compute=np.float32, form=form)
    return make(name, form=form)

"""Faulty hand-written BNs for the fault-injection tests (NumPy protocol)."""
import sys
import time

import numpy as np


def _good(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
    axis = axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype), running_mean, running_var


def raises(x, *a, **k):
    raise RuntimeError("boom from user code")


def returns_none(x, *a, **k):
    return None


def wrong_shape(x, *a, **k):
    y, m, v = _good(x, *a, **k)
    return y.reshape(-1), m, v


def returns_nan(x, *a, **k):
    y, m, v = _good(x, *a, **k)
    return np.full_like(y, np.nan), m, v


def mutates_input(x, *a, **k):
    y, m, v = _good(x, *a, **k)
    x[...] = 0
    return y, m, v


def prints(x, *a, **k):
    """A correct BN (the catalog's two-pass kernel) that prints."""
    from bnconf.catalogs.faults import CORRECT
    print("hello from user code; this must not corrupt --json")
    return CORRECT["two_pass"](x, *a, **k)


def slow(x, *a, **k):
    time.sleep(30)
    return _good(x, *a, **k)


def wrong_dtype(x, *a, **k):
    y, m, v = _good(x, *a, **k)
    return y.astype(np.float64 if x.dtype == np.float32 else np.float32), m, v


not_callable = 42

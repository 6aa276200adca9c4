"""A correct NumPy BN under the PyTorch profile: `bnconf audit examples/my_bn.py:batch_norm --profile torch`."""
import numpy as np


def batch_norm(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
    axis = axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    n = x.size // max(x.shape[axis], 1)
    if training and n < 2:  # BN-ONE-VALUE (torch profile) and BN-EMPTY-BATCH: a clear error
        raise ValueError(f"expected more than 1 value per channel when training, got {n}")
    if training or running_mean is None:
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)        # two-pass, biased
        if training and running_mean is not None:
            running_mean = (1 - momentum) * running_mean + momentum * mean.reshape(-1)
            running_var = (1 - momentum) * running_var + momentum * var.reshape(-1) * n / (n - 1)
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype), running_mean, running_var

"""A BN with two classic bugs: eps outside the square root, and Keras-style momentum under
the PyTorch profile. `bnconf audit examples/buggy_bn.py:batch_norm --profile torch` exits 1."""
import numpy as np


def batch_norm(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
    axis = axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    if training or running_mean is None:
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
        if training and running_mean is not None:
            running_mean = momentum * running_mean + (1 - momentum) * mean.reshape(-1)
            running_var = momentum * running_var + (1 - momentum) * var.reshape(-1)
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    y = (x - mean) / (np.sqrt(var) + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype), running_mean, running_var

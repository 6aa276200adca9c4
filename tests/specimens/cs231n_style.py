"""NumPy BN in the form of the CS231n assignment (forward with a bn_param dict returning
(out, cache), hand-written backward passes), written for tests/test_hand_written.py; the bugs
are the classic ones. NumPy only: no framework behind it."""
import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    n, d = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(d, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(d, dtype=x.dtype))
    cache = None
    if mode == "train":
        mu = x.mean(axis=0)
        xc = x - mu
        var = (xc ** 2).mean(axis=0)
        std = np.sqrt(var + eps)
        x_hat = xc / std
        out = gamma * x_hat + beta
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
        cache = (x_hat, xc, std, gamma)
    elif mode == "test":
        out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
    else:
        raise ValueError(f"invalid forward batchnorm mode {mode!r}")
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out.astype(x.dtype), cache


def batchnorm_backward(dout, cache):
    """Through the computation graph, node by node."""
    x_hat, xc, std, gamma = cache
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout * gamma
    dxc = dx_hat / std
    dstd = -(dx_hat * xc / std ** 2).sum(axis=0)
    dvar = 0.5 * dstd / std
    dxc += 2 * xc * dvar / n
    dx = dxc - dxc.mean(axis=0)
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """The simplified closed form."""
    x_hat, _, std, gamma = cache
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    g = dout * gamma
    dx = (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0)) / std
    return dx, dgamma, dbeta


def batchnorm_backward_no_var_term(dout, cache):
    """The classic slip: the variance's dependence on x forgotten (the mean's kept)."""
    x_hat, _, std, gamma = cache
    g = dout * gamma
    dx = (g - g.mean(axis=0)) / std
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def batchnorm_forward_eval_no_eps(x, gamma, beta, bn_param):
    """Right in training; in test mode the eps is forgotten: sqrt(running_var)."""
    if bn_param["mode"] == "test":
        mean, var = bn_param["running_mean"], bn_param["running_var"]
        return (gamma * (x - mean) / np.sqrt(var) + beta).astype(x.dtype), None
    return batchnorm_forward(x, gamma, beta, bn_param)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """(N, C, H, W) through the 2-D forward, channels moved last."""
    if x.ndim != 4:
        raise NotImplementedError("(N, C, H, W) inputs only")
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    out, cache = batchnorm_forward(flat, gamma, beta, bn_param)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), cache

"""Hand-written BNs in the forms people write them, each with a known verdict (see
tests/test_hand_written.py). Written for these tests; the bugs are the classic ones."""
import numpy as np
import torch


# ---- NumPy, the bnconf signature, (N, D) only --------------------------------------------------
def _bn_2d(x, weight, bias, running_mean, running_var, training, momentum, eps):
    n, _ = x.shape                       # a 2-D-only BN: anything else fails to unpack
    if training:
        if n < 2:
            raise ValueError("expected more than 1 value per channel when training")
        mu = x.mean(0)
        var = ((x - mu) ** 2).mean(0)
        if running_mean is not None:
            running_mean = (1 - momentum) * running_mean + momentum * mu
            running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    elif running_mean is not None:
        mu, var = running_mean, running_var
    else:
        mu, var = x.mean(0), x.var(0)
    y = (x - mu) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight + bias
    return y.astype(x.dtype), running_mean, running_var


def unpacks_2d(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
    return _bn_2d(x, weight, bias, running_mean, running_var, training, momentum, eps)


def refuses_2d(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
    if x.ndim != 2:
        raise NotImplementedError("(N, D) inputs only")
    return _bn_2d(x, weight, bias, running_mean, running_var, training, momentum, eps)


def float32_only_2d(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
    if x.ndim != 2 or x.dtype != np.float32:
        raise NotImplementedError("float32 (N, D) inputs only")
    return _bn_2d(x, weight, bias, running_mean, running_var, training, momentum, eps)


# ---- torch functions, d2l's signature: the mode from the gradient mode ---------------------
def d2l_batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
    if not torch.is_grad_enabled():
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert len(X.shape) in (2, 4)
        dims = (0,) if X.dim() == 2 else (0, 2, 3)
        mean = X.mean(dim=dims, keepdim=True)
        var = ((X - mean) ** 2).mean(dim=dims, keepdim=True)
        X_hat = (X - mean) / torch.sqrt(var + eps)
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean      # Keras-form momentum
        moving_var = momentum * moving_var + (1.0 - momentum) * var         # biased
    return gamma * X_hat + beta, moving_mean.data, moving_var.data


# ---- torch functions with a hand-written backward pass ------------------------------------
class _BN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps, full):
        mu = x.mean(0)
        var = ((x - mu) ** 2).mean(0)
        std = torch.sqrt(var + eps)
        x_hat = (x - mu) / std
        ctx.save_for_backward(x_hat, gamma, std)
        ctx.full = full
        return gamma * x_hat + beta, mu, var

    @staticmethod
    def backward(ctx, dy, _dmu, _dvar):
        x_hat, gamma, std = ctx.saved_tensors
        g = dy * gamma
        if ctx.full:   # the statistics' own gradients (Ioffe & Szegedy 2015, section 3)
            dx = (g - g.mean(0) - x_hat * (g * x_hat).mean(0)) / std
        else:          # the statistics treated as constants: a classic hand-written slip
            dx = g / std
        return dx, (dy * x_hat).sum(0), dy.sum(0), None, None


def _with_backward(full):
    def batch_norm(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
        if x.dim() != 2:
            raise NotImplementedError("(N, D) inputs only")
        if not training:
            return weight * (x - running_mean) / torch.sqrt(running_var + eps) + bias
        n = x.shape[0]
        if n < 2:
            raise ValueError("expected more than 1 value per channel when training")
        y, mu, var = _BN.apply(x, weight, bias, eps, full)
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mu)
            running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))
        return y
    return batch_norm


custom_backward = _with_backward(True)
custom_backward_constant_stats = _with_backward(False)


# ---- torch modules built by their own constructor -----------------------------------------
class D2lStyle(torch.nn.Module):
    """BatchNorm(num_features, num_dims) with registered buffers, the torch conventions."""

    def __init__(self, num_features, num_dims, momentum=0.1, eps=1e-5):
        super().__init__()
        if num_dims not in (2, 4):
            raise NotImplementedError("num_dims 2 or 4")
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.dims = (0,) if num_dims == 2 else (0, 2, 3)
        self.momentum, self.eps = momentum, eps
        self.weight = torch.nn.Parameter(torch.ones(shape))
        self.bias = torch.nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))

    def forward(self, x):
        if self.training:
            n = x.numel() // x.shape[1]
            if n < 2:
                raise ValueError("expected more than 1 value per channel when training")
            mean = x.mean(dim=self.dims, keepdim=True)
            var = ((x - mean) ** 2).mean(dim=self.dims, keepdim=True)
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        return self.weight * (x - mean) / self._std(var) + self.bias

    def _std(self, var):
        return torch.sqrt(var + self.eps)

    def reset_running_stats(self):
        self.running_mean.zero_()
        self.running_var.fill_(1)


class RandomGamma(D2lStyle):
    """Right in every step, but gamma starts random (torch starts it at 1)."""

    def __init__(self, num_features, num_dims):
        super().__init__(num_features, num_dims)
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape))


class EpsOutside(D2lStyle):
    """eps added to the standard deviation, not the variance (torch adds it inside the root)."""

    def _std(self, var):
        return torch.sqrt(var) + self.eps if self.training else super()._std(var)


# ---- a torch function on every layout, the bnconf signature ------------------------------
def unbiased_normalize(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
    """Normalizes a training batch with the unbiased variance (torch.var's default), which
    torch keeps for the running variance only."""
    axis = axis % x.dim()
    dims = tuple(d for d in range(x.dim()) if d != axis)
    shape = [1] * x.dim()
    shape[axis] = -1
    if training:
        n = x.numel() // max(x.shape[axis], 1)
        if n < 2:
            raise ValueError("expected more than 1 value per channel when training")
        mean, var = x.mean(dim=dims), x.var(dim=dims)
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var)
    else:
        mean, var = running_mean, running_var
    x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    return x_hat * weight.reshape(shape) + bias.reshape(shape)

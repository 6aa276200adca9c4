"""Specimen from seeds/000 ("深入理解BatchNorm的原理、代码实现以及BN在CNN中的应用", a Chinese blog
post on BatchNorm in PyTorch), section 3.2 "BatchNorm torch代码实现", quoting d2l.ai.

The document presents it as PyTorch code (profile `torch`). Transcribed as written; only the
`from d2l import torch as d2l` line is dropped (unused). Conventions of the code as written:
mode chosen by torch.is_grad_enabled(), inputs of rank 2 or 4 only, `momentum` weights the
OLD value (moving = momentum*moving + (1-momentum)*batch), biased running variance.
"""
import numpy as np

from .._protocol import Implementation, Unsupported, default_capabilities, np_out

SOURCE_DOCUMENT = "seeds/000 (Chinese blog post quoting d2l.ai, chapter_convolutional-modern/batch-norm)"
CLAIMED_PROFILE = "torch"

# ----------------------------------------------------------------- as written
import torch  # noqa: E402
from torch import nn  # noqa: E402,F401


def batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
    # Use `is_grad_enabled` to determine whether the current mode is training
    # mode or prediction mode
    if not torch.is_grad_enabled():
        # If it is prediction mode, directly use the mean and variance
        # obtained by moving average
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert len(X.shape) in (2, 4)
        if len(X.shape) == 2:
            # When using a fully-connected layer, calculate the mean and
            # variance on the feature dimension
            mean = X.mean(dim=0)
            var = ((X - mean) ** 2).mean(dim=0)
        else:
            # When using a two-dimensional convolutional layer, calculate the
            # mean and variance on the channel dimension (axis=1). Here we
            # need to maintain the shape of `X`, so that the broadcasting
            # operation can be carried out later
            mean = X.mean(dim=(0, 2, 3), keepdim=True)
            var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        # In training mode, the current mean and variance are used for the
        # standardization
        X_hat = (X - mean) / torch.sqrt(var + eps)
        # Update the mean and variance using moving average
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
        moving_var = momentum * moving_var + (1.0 - momentum) * var
    Y = gamma * X_hat + beta  # Scale and shift
    return Y, moving_mean.data, moving_var.data
# ----------------------------------------------------------------- end of the document's code


class _Instance:
    """Holds gamma/beta/moving stats shaped as d2l's BatchNorm class does ((1, C) or (1, C, 1, 1),
    moving_mean 0, moving_var 1) and calls batch_norm as written."""

    def __init__(self, params):
        if params["momentum"] in ("default", None) or params["eps"] == "default":
            raise Unsupported("the function takes eps and momentum explicitly")
        self.p = params
        c, rank = params["num_features"], params["rank"]
        self.shape = (1, c) if rank == 2 else (1, c, 1, 1)
        dt = getattr(torch, params["dtype"])
        w = np.ones(c) if params["affine"] != "random" else params["weight"]
        b = np.zeros(c) if params["affine"] != "random" else params["bias"]
        self.gamma = torch.tensor(np.asarray(w, np.float64), dtype=dt).reshape(self.shape).requires_grad_(True)
        self.beta = torch.tensor(np.asarray(b, np.float64), dtype=dt).reshape(self.shape).requires_grad_(True)
        self.mm = torch.zeros(self.shape, dtype=dt)
        self.mv = torch.ones(self.shape, dtype=dt)

    def forward(self, x, training, dy):
        xt = torch.as_tensor(x)
        ctx = torch.enable_grad() if training else torch.no_grad()
        with ctx:
            xt.requires_grad_(training and dy is not None)
            y, mm, mv = batch_norm(xt, self.gamma, self.beta, self.mm, self.mv, eps=float(self.p["eps"]),
                                   momentum=float(self.p["momentum"]))
        out = {"y": y.detach().numpy().copy(), "y_dtype": str(y.dtype).replace("torch.", "")}
        if training and dy is not None:
            self.gamma.grad = self.beta.grad = None
            (y * torch.as_tensor(dy)).sum().backward()
            out.update(dx=xt.grad.numpy().copy(), dweight=self.gamma.grad.numpy().reshape(-1).copy(),
                       dbias=self.beta.grad.numpy().reshape(-1).copy())
        if training:
            self.mm, self.mv = mm.reshape(self.shape), mv.reshape(self.shape)
        return out

    def running_stats(self):
        return self.mm.numpy().reshape(-1).copy(), self.mv.numpy().reshape(-1).copy()

    def counter(self):
        return None


def implementations():
    caps = default_capabilities(ranks=(2, 4), feature_axes=("first",), dtypes=("float32", "float64"),
                                default_eps=False, default_momentum=False, default_init=False, affine_off=False)
    return [Implementation("snippet.000.d2l.batch_norm", CLAIMED_PROFILE, caps, lambda p, d: _Instance(p),
                           lambda: {"torch": torch.__version__, "source": SOURCE_DOCUMENT}, lambda: ["cpu"],
                           "snippets")]

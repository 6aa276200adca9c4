"""Specimen from seeds/000 ("深入理解BatchNorm的原理、代码实现以及BN在CNN中的应用", a Chinese blog
post on BatchNorm in PyTorch), section 3.2 "BatchNorm torch代码实现", quoting d2l.ai.

The document presents it as PyTorch code (profile `torch`). Transcribed as written; only the
`from d2l import torch as d2l` line is dropped (unused). Conventions of the code as written:
mode chosen by torch.is_grad_enabled(), inputs of rank 2 or 4 only, `momentum` weights the
OLD value (moving = momentum*moving + (1-momentum)*batch), biased running variance.
"""
from .._protocol import Implementation, default_capabilities
from .torch_specimen import CallerHeldState

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


class _Instance(CallerHeldState):
    """Holds gamma/beta/moving stats shaped as d2l's BatchNorm class does and calls batch_norm
    as written (it reads the mode from torch.is_grad_enabled())."""

    def call(self, xt, training):
        return batch_norm(xt, self.gamma, self.beta, self.mm, self.mv, eps=float(self.p["eps"]),
                          momentum=float(self.p["momentum"]))


def implementations():
    caps = default_capabilities(ranks=(2, 4), feature_axes=("first",), dtypes=("float32", "float64"),
                                default_eps=False, default_momentum=False, default_init=False, affine_off=False,
                                second_grads=True)
    return [Implementation("snippet.000.d2l.batch_norm", CLAIMED_PROFILE, caps, lambda p, d: _Instance(p),
                           lambda: {"torch": torch.__version__, "source": SOURCE_DOCUMENT}, lambda: ["cpu"],
                           "snippets")]

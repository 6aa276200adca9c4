"""Specimen from seeds/002 (Chinese notes on batch normalization, "batch normalization 的代码基本上为"):
the four-line NumPy snippet.

The document claims BN semantics ("the mean and standard-deviation are calculated
per-dimension over the mini-batches") and discusses Keras' `axis=-1`; it names no profile,
so it is audited under the closest one, `keras` (feature axis last, gamma/beta, epsilon).
Transcribed as written inside a minimal host (self.epsilon, self.gamma, self.beta). As
written it reduces over axis -1, the FEATURE axis, and adds eps to the std; it keeps no
running statistics, so eval is the same computation.
"""
import numpy as np

from .._protocol import Implementation, Unsupported, default_capabilities, np_out

SOURCE_DOCUMENT = "seeds/002 (Chinese notes on batch normalization), NumPy snippet"
CLAIMED_PROFILE = "keras"


class Host:
    def __init__(self, epsilon, gamma, beta):
        self.epsilon, self.gamma, self.beta = epsilon, gamma, beta

    def forward(self, X):
        # ------------------------------------------------------------- as written
        mu = np.mean(X, axis=-1, keepdims=True)
        std = np.std(X, axis=-1, keepdims=True)
        X_normed = (X - mu) / (std + self.epsilon)
        out = self.gamma * X_normed + self.beta
        # ------------------------------------------------------------- end as written
        return out


class _Instance:
    def __init__(self, params):
        if params["eps"] == "default":
            raise Unsupported("the snippet reads self.epsilon; no default is shown")
        c = params["num_features"]
        g = params["weight"] if params["affine"] == "random" else np.ones(c)
        b = params["bias"] if params["affine"] == "random" else np.zeros(c)
        self.host = Host(float(params["eps"]), np.asarray(g, np.float64), np.asarray(b, np.float64))

    def forward(self, x, training, dy):
        y = self.host.forward(x)
        return dict(zip(("y", "y_dtype"), np_out(np.asarray(y).astype(x.dtype))))

    def running_stats(self):
        return None

    def counter(self):
        return None


def implementations():
    caps = default_capabilities(feature_axes=("last",), dtypes=("float32", "float64"), grads=False,
                                running_stats=False, default_eps=False, default_momentum=False,
                                explicit_momentum=False, default_init=False, affine_off=False)
    return [Implementation("snippet.002.numpy", CLAIMED_PROFILE, caps, lambda p, d: _Instance(p),
                           lambda: {"numpy": np.__version__, "source": SOURCE_DOCUMENT}, lambda: ["cpu"],
                           "snippets")]

"""Specimen from seeds/000 (Chinese blog post on BatchNorm), "下面是来自于Keras卷积层的BN实现的一小段
主要源码": the old (Keras 1) BatchNormalization call body.

Claimed profile: `keras` (it is Keras code; momentum weights the old value). Transcribed as
written inside a minimal host class: `K` is a NumPy stand-in for the old Keras backend
functions it calls (mean, reshape, square, sqrt), and `self.updates` is applied after the
call as Keras applied it. Its conventions as written: it keeps a running STD (not a
variance), adds eps inside the mean of squares AND again to the std in the denominator.
This adapter reports running_std**2 in the running-variance slot, so the audit compares
like with like; the mismatch that remains is the snippet's.
"""
import numpy as np

from .._protocol import Implementation, Unsupported, default_capabilities, np_out

SOURCE_DOCUMENT = "seeds/000 (Chinese blog post), old Keras BatchNormalization snippet"
CLAIMED_PROFILE = "keras"


class K:
    """The old keras.backend calls the snippet uses, on NumPy."""
    mean = staticmethod(lambda x, axis: np.mean(x, axis=tuple(axis)))
    reshape = staticmethod(np.reshape)
    square = staticmethod(np.square)
    sqrt = staticmethod(np.sqrt)


class OldKerasBN:
    def __init__(self, axis, momentum, epsilon, num_features, gamma, beta):
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon
        self.running_mean = np.zeros(num_features)
        self.running_std = np.ones(num_features)
        self.gamma, self.beta = gamma, beta
        self.updates = []

    def call(self, X, train):
        self.input_shape = X.shape
        # ------------------------------------------------------------- as written
        input_shape = self.input_shape
        reduction_axes = list(range(len(input_shape)))
        del reduction_axes[self.axis]
        broadcast_shape = [1] * len(input_shape)
        broadcast_shape[self.axis] = input_shape[self.axis]
        if train:
            m = K.mean(X, axis=reduction_axes)
            brodcast_m = K.reshape(m, broadcast_shape)
            std = K.mean(K.square(X - brodcast_m) + self.epsilon, axis=reduction_axes)
            std = K.sqrt(std)
            brodcast_std = K.reshape(std, broadcast_shape)
            mean_update = self.momentum * self.running_mean + (1-self.momentum) * m
            std_update = self.momentum * self.running_std + (1-self.momentum) * std
            self.updates = [(self.running_mean, mean_update),
            (self.running_std, std_update)]
            X_normed = (X - brodcast_m) / (brodcast_std + self.epsilon)
        else:
            brodcast_m = K.reshape(self.running_mean, broadcast_shape)
            brodcast_std = K.reshape(self.running_std, broadcast_shape)
            X_normed = ((X - brodcast_m) /
            (brodcast_std + self.epsilon))
        out = K.reshape(self.gamma, broadcast_shape) * X_normed + K.reshape(self.beta, broadcast_shape)
        # ------------------------------------------------------------- end as written
        return out

    def apply_updates(self):
        """Keras ran the (variable, new value) pairs in self.updates after the step."""
        for var, new in self.updates:
            var[...] = new
        self.updates = []


class _Instance:
    def __init__(self, params):
        if params["momentum"] in ("default", None) or params["eps"] == "default":
            raise Unsupported("the snippet reads self.momentum and self.epsilon; no defaults are shown")
        c = params["num_features"]
        g = params["weight"] if params["affine"] == "random" else np.ones(c)
        b = params["bias"] if params["affine"] == "random" else np.zeros(c)
        self.p = params
        self.bn = OldKerasBN(params["feature_axis"], float(params["momentum"]), float(params["eps"]), c,
                             np.asarray(g, np.float64), np.asarray(b, np.float64))

    def forward(self, x, training, dy):
        y = self.bn.call(x, training)
        if training:
            self.bn.apply_updates()
        return dict(zip(("y", "y_dtype"), np_out(np.asarray(y).astype(x.dtype))))

    def running_stats(self):
        return self.bn.running_mean.copy(), self.bn.running_std.copy() ** 2

    def counter(self):
        return None


def implementations():
    caps = default_capabilities(dtypes=("float32", "float64"), grads=False, default_eps=False,
                                default_momentum=False, default_init=False, affine_off=False)
    return [Implementation("snippet.000.keras-old.BatchNormalization", CLAIMED_PROFILE, caps,
                           lambda p, d: _Instance(p), lambda: {"numpy": np.__version__, "source": SOURCE_DOCUMENT},
                           lambda: ["cpu"], "snippets")]

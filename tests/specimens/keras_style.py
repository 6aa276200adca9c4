"""Keras 3 Layer subclasses in the form people write them (build, call with training=),
written for tests/test_hand_written_keras.py; backend-agnostic through keras.ops. The
statistics are sums divided by n: keras.ops.mean and keras.ops.var compute float64 in float32
precision in Keras 3.15.1 (OpsMeanBN), and keras.ops.moments is a one-pass variance."""
import keras
from keras import ops


class KerasBN(keras.layers.Layer):
    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon

    def build(self, input_shape):
        c = (input_shape[self.axis],)
        self.gamma = self.add_weight(shape=c, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=c, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=c, initializer="zeros", trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=c, initializer="ones", trainable=False, name="moving_variance")

    def _reduce(self, x):
        axis = self.axis % len(x.shape)
        return [a for a in range(len(x.shape)) if a != axis], [-1 if a == axis else 1 for a in range(len(x.shape))]

    def _moments(self, x, axes):
        n = 1
        for a in axes:
            n *= x.shape[a]
        mean = ops.sum(x, axis=axes, keepdims=True) / n
        return mean, ops.sum(ops.square(x - mean), axis=axes, keepdims=True) / n

    def call(self, x, training=False):
        axes, shape = self._reduce(x)
        if training:
            mean, var = self._moments(x, axes)
            self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * ops.reshape(mean, (-1,)))
            self.moving_variance.assign(self.momentum * self.moving_variance
                                        + (1 - self.momentum) * ops.reshape(var, (-1,)))
        else:
            mean, var = ops.reshape(self.moving_mean, shape), ops.reshape(self.moving_variance, shape)
        y = (x - mean) / ops.sqrt(var + self.epsilon)
        return y * ops.reshape(self.gamma, shape) + ops.reshape(self.beta, shape)


class UnbiasedKerasBN(KerasBN):
    """The bug: the variance divides by n - 1."""

    def _moments(self, x, axes):
        mean, var = super()._moments(x, axes)
        n = 1
        for a in axes:
            n *= x.shape[a]
        return mean, var * n / max(n - 1, 1)


class OpsMeanBN(KerasBN):
    """Correct as written, with keras.ops.mean: which computes a float64 mean in float32 precision
    in Keras 3.15.1 (keras/src/backend/*/numpy.py mean: dtypes.result_type(x.dtype, "float32"))."""

    def _moments(self, x, axes):
        mean = ops.mean(x, axis=axes, keepdims=True)
        return mean, ops.mean(ops.square(x - mean), axis=axes, keepdims=True)


class Keras2BN(KerasBN):
    """Keras 2 code: the moving statistics through add_update."""

    def call(self, x, training=False):
        if training:
            self.add_update([])
        return super().call(x, training=training)

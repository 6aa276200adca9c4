"""A hand-written Keras 3 `Layer` subclass (`--kind keras-layer`), built as `NAME()` or by an
--init template (`MyBN(axis=axis, momentum=momentum, epsilon=eps)`), called as Keras calls it,
`layer(x, training=training)`, on whatever backend KERAS_BACKEND selects. Gradients come from
the backend's autodiff on `stateless_call` (adapters/keras_bn.py), as for Keras' own layer.

Its scale and shift are the trainable weights named gamma/scale and beta/offset/center (any
shape with one value per feature); its statistics the non-trainable ones named
moving_mean/running_mean and moving_variance/moving_var/running_var. Layer code written for
Keras 2 (`self.add_update(...)`, tf_keras) does not run under Keras 3: that is said, not
charged to a BN clause.
"""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from bnconf.adapters._protocol import Implementation, Unsupported, default_capabilities
from bnconf.adapters.jax_bn import LAYOUT_POOL, _jax
from bnconf.adapters.keras_bn import _np, _to_backend, stateless_grads
from bnconf.adapters.numpy_protocol import CALL_TIMEOUT_S, CallTimeout, ProtocolError, _time_limit
from bnconf.running.call_templates import INIT_VALUES, Template, require_hyperparameters

SCALE, SHIFT = ("gamma", "scale"), ("beta", "offset", "center")
MEAN, VAR = ("moving_mean", "running_mean"), ("moving_variance", "moving_var", "running_var")
KERAS_INIT_VALUES = {**INIT_VALUES, "axis": "the feature axis"}


def _keras():
    if os.environ.get("KERAS_BACKEND") == "jax":
        _jax()   # float64 needs jax_enable_x64 before keras makes its first array
    import keras
    return keras


def _named(variables, names):
    """The variable whose last name part is one of `names`."""
    for v in variables:
        last = str(getattr(v, "path", v.name)).rsplit("/", 1)[-1].split(":")[0]
        if last in names:
            return v
    return None


def _keras2(exc) -> bool:
    return isinstance(exc, AttributeError) and "add_update" in str(exc)


class _KerasLayerInstance:
    def __init__(self, keras, cls, params, timeout, init):
        self.keras, self.cls, self.p, self.timeout, self.init = keras, cls, params, timeout, init
        self.backend = keras.backend.backend()
        how = init.text if init else f"{cls.__name__}()"
        require_hyperparameters(params, init, how)
        values = {"num_features": params["num_features"], "momentum": params["momentum"], "eps": params["eps"],
                  "rank": params["rank"], "axis": params["feature_axis"]}
        shape = [2] * params["rank"]
        shape[params["feature_axis"]] = params["num_features"]
        try:
            with _floatx(keras, params["dtype"]), contextlib.redirect_stdout(io.StringIO()), _time_limit(timeout):
                self.layer = init.call(cls.__name__, cls, values) if init else cls()
                if not self.layer.built:
                    self.layer.build(tuple([None] + shape[1:]))
        except (Unsupported, CallTimeout, NotImplementedError):
            raise
        except Exception as exc:
            raise ProtocolError(f"building {how} raised {type(exc).__name__}: {exc}") from None
        if not isinstance(self.layer, keras.layers.Layer):
            raise ProtocolError(f"{how} returned {type(self.layer).__name__}, not a keras.layers.Layer")
        self.w, self.b = _named(self.layer.trainable_weights, SCALE), _named(self.layer.trainable_weights, SHIFT)
        if self.w is None or self.b is None:
            raise Unsupported("no scale/shift weights found among "
                              + str(sorted(str(v.path) for v in self.layer.trainable_weights)))
        if params["affine"] == "random":
            self.w.assign(np.asarray(params["weight"]).reshape(self.w.shape))
            self.b.assign(np.asarray(params["bias"]).reshape(self.b.shape))

    def initial_affine(self):
        """gamma and beta as the layer was built (BN-INIT; running/trace.py)."""
        return tuple(_np(self.backend, v.value)[0].reshape(-1).copy() for v in (self.w, self.b))

    def forward(self, x, training, dy):
        xt = _to_backend(self.backend, x, self.p["dtype"])
        out = {}
        with _floatx(self.keras, self.p["dtype"]), contextlib.redirect_stdout(io.StringIO()), \
                _time_limit(self.timeout), _keras3_only():
            if dy is not None and training:
                dyt = _to_backend(self.backend, dy, "float64" if self.p["dtype"] == "float64" else "float32")
                g = stateless_grads(self.layer, self.backend, xt, dyt, training)
                order = list(self.layer.trainable_variables)
                out["dx"] = _np(self.backend, g[0])[0]
                for key, v in (("dweight", self.w), ("dbias", self.b)):
                    i = next(i for i, t in enumerate(order) if t is v)
                    out[key] = _np(self.backend, g[1 + i])[0].reshape(-1)
            y = self.layer(xt, training=training)
        if not hasattr(y, "shape"):
            raise ProtocolError(f"call returned {type(y).__name__}, not a tensor")
        out["y"], out["y_dtype"] = _np(self.backend, y)
        return out

    def running_stats(self):
        m = _named(self.layer.non_trainable_weights, MEAN)
        v = _named(self.layer.non_trainable_weights, VAR)
        if m is None or v is None:
            return None
        return (_np(self.backend, m.value)[0].reshape(-1).copy(), _np(self.backend, v.value)[0].reshape(-1).copy())

    def counter(self):
        return None


@contextlib.contextmanager
def _floatx(keras, dtype):
    """The case dtype as Keras' floatx, as a user running a float64 model sets it
    (keras.config.set_floatx): the layer's default dtype, and the precision Python scalars take
    in its arithmetic (with floatx float32, `0.99 * a_float64_variable` multiplies by
    float32(0.99): Keras 3.15.1)."""
    before = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)   # a policy set before floatx changed does not follow it
    try:
        yield
    finally:
        keras.config.set_floatx(before[0])
        keras.config.set_dtype_policy(before[1])


@contextlib.contextmanager
def _keras3_only():
    try:
        yield
    except AttributeError as exc:
        if _keras2(exc):
            raise ProtocolError(f"{exc}: the layer is written for Keras 2 (add_update; tf_keras), which "
                                "Keras 3 does not run; Keras 3 layers assign their variables") from None
        raise


def keras_layer_implementation(cls, name, profile, timeout=CALL_TIMEOUT_S, init=None) -> Implementation:
    keras = _keras()
    init = Template(init, cls.__name__, KERAS_INIT_VALUES, "--init") if init else None
    named = init.names if init else set()
    backend = keras.backend.backend()
    caps = default_capabilities(feature_axes=("first", "last") if "axis" in named else ("last",),
                                dtypes=("float32", "float64"), explicit_momentum="momentum" in named,
                                default_momentum="momentum" not in named, default_eps="eps" not in named,
                                affine_off=False, default_init=True, eval_without_stats=False,
                                layout_pool=LAYOUT_POOL if backend == "jax" else 0)
    return Implementation(name, profile, caps,
                          lambda params, device: _KerasLayerInstance(keras, cls, params, timeout, init),
                          lambda: {"keras": keras.__version__, "backend": backend}, lambda: ["cpu"], "user")

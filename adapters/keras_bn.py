"""Keras 3 keras.layers.BatchNormalization on the tensorflow, jax and torch backends.

The backend is chosen with KERAS_BACKEND before keras is first imported, which is why each
implementation runs in its own process. Gradients go through the backend's own autodiff
on the layer's stateless_call.
"""
import os

import numpy as np

from ._protocol import Implementation, Unsupported, default_capabilities, np_out

BACKEND_FAMILY = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def _keras(backend):
    current = os.environ.get("KERAS_BACKEND")
    if current and current != backend:
        raise Unsupported(f"KERAS_BACKEND is {current!r} in this process; {backend!r} needs its own process")
    os.environ["KERAS_BACKEND"] = backend
    if backend == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
    import keras
    if keras.backend.backend() != backend:
        raise Unsupported(f"keras was already imported with backend {keras.backend.backend()!r}")
    return keras


def _to_backend(backend, a, dtype):
    """A NumPy array as a tensor of the case dtype on the backend."""
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.cast(tf.constant(np.asarray(a, np.float32 if dtype == "bfloat16" else a.dtype)), dtype)
    if backend == "jax":
        import jax.numpy as jnp
        return jnp.asarray(np.asarray(a, np.float32 if dtype == "bfloat16" else a.dtype)).astype(dtype)
    import torch
    return torch.as_tensor(np.asarray(a, np.float32 if dtype == "bfloat16" else a.dtype)).to(getattr(torch, dtype))


def _np(backend, t):
    if backend == "torch":
        t = t.detach().cpu()
        name = str(t.dtype).replace("torch.", "")
        return np_out(t.float().numpy() if name == "bfloat16" else t.numpy().copy(), name)
    if backend == "jax":
        name = str(t.dtype)
        return np_out(np.array(t.astype("float32") if name == "bfloat16" else t), name)
    import tensorflow as tf
    name = t.dtype.name
    return np_out((tf.cast(t, tf.float32) if name == "bfloat16" else t).numpy().copy(), name)


def stateless_grads(layer, b, xt, dyt, training) -> list:
    """[dL/dx, dL/dv for each trainable variable, in the layer's order] of L = sum(y * dy), by the
    backend's own autodiff on the layer's stateless_call."""
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]
    if b == "tensorflow":
        import tensorflow as tf
        tvt = [tf.convert_to_tensor(v) for v in tv]
        with tf.GradientTape() as tape:
            tape.watch([xt] + tvt)
            y, _ = layer.stateless_call(tvt, ntv, xt, training=training)
            loss = tf.reduce_sum(tf.cast(y, dyt.dtype) * dyt)
        return tape.gradient(loss, [xt] + tvt)
    if b == "jax":
        import jax
        import jax.numpy as jnp

        def f(xx, tvv):
            y, _ = layer.stateless_call(tvv, ntv, xx, training=training)
            return jnp.sum(y.astype(dyt.dtype) * dyt)
        gx, gt = jax.grad(f, argnums=(0, 1))(xt, tv)
        return [gx] + list(gt)
    xg = xt.clone().requires_grad_(True)
    tvt = [v.detach().clone().requires_grad_(True) for v in tv]
    y, _ = layer.stateless_call(tvt, ntv, xg, training=training)
    (y.to(dyt.dtype) * dyt).sum().backward()
    return [xg.grad] + [v.grad for v in tvt]


class _Instance:
    def __init__(self, backend, params):
        self.backend, self.params = backend, params
        keras = _keras(backend)
        kw = {}
        if params["eps"] != "default":
            kw["epsilon"] = float(params["eps"])
        if params["momentum"] != "default":
            if params["momentum"] is None:
                raise Unsupported("keras BatchNormalization takes a float momentum")
            kw["momentum"] = float(params["momentum"])
        affine = params["affine"] != "off"
        if params.get("renorm"):
            rn = params["renorm"]
            kw.update(renorm=True, renorm_momentum=rn["momentum"],
                      renorm_clipping={k: rn[k] for k in ("rmin", "rmax", "dmax")})
        self.layer = keras.layers.BatchNormalization(axis=params["feature_axis"], center=affine, scale=affine,
                                                     dtype=params["dtype"], **kw)
        shape = [None] * params["rank"]
        shape[params["feature_axis"]] = params["num_features"]
        self.layer.build(tuple(shape))
        if params["affine"] == "random":
            self.layer.gamma.assign(np.asarray(params["weight"], np.float32 if params["dtype"] == "bfloat16" else None))
            self.layer.beta.assign(np.asarray(params["bias"], np.float32 if params["dtype"] == "bfloat16" else None))

    def reload(self):
        """BN-STATE-PERSIST the Keras way: get_weights() (moving statistics included, as
        non-trainable weights) set into a freshly built layer of the same configuration, built
        without the case's random gamma/beta (the weights must bring them back)."""
        weights = self.layer.get_weights()
        fresh = _Instance(self.backend, dict(self.params, affine="default" if self.params["affine"] == "random"
                                             else self.params["affine"]))
        fresh.layer.set_weights(weights)
        self.layer = fresh.layer

    def to_float64(self):
        """Keras converts no built layer's dtype: nothing to judge."""
        return {}

    def forward_under(self, x, training, grad_enabled):
        """training= alone chooses the mode; the backend's gradient recording is set around the call
        (torch: torch.set_grad_enabled; tensorflow: inside a GradientTape watching the input)."""
        xt = _to_backend(self.backend, x, self.params["dtype"])
        if self.backend == "torch":
            import torch
            with torch.set_grad_enabled(grad_enabled):
                y = self.layer(xt.requires_grad_(grad_enabled) if grad_enabled else xt, training=training)
        elif grad_enabled:
            import tensorflow as tf
            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = self.layer(xt, training=training)
        else:
            y = self.layer(xt, training=training)
        return {"y": _np(self.backend, y)[0]}

    def forward(self, x, training, dy):
        xt = _to_backend(self.backend, x, self.params["dtype"])
        out = {}
        if dy is not None:
            out.update(self._grads(xt, dy, training))
        y = self.layer(xt, training=training)
        out["y"], out["y_dtype"] = _np(self.backend, y)
        return out

    def _grads(self, xt, dy, training):
        dyt = _to_backend(self.backend, dy, "float64" if self.params["dtype"] == "float64" else "float32")
        g = stateless_grads(self.layer, self.backend, xt, dyt, training)
        out = {"dx": _np(self.backend, g[0])[0]}
        if len(g) == 3:  # [gamma, beta] in Keras' variable order
            out["dweight"], out["dbias"] = _np(self.backend, g[1])[0], _np(self.backend, g[2])[0]
        return out

    def grad_grad(self, x, dy, v):
        """dx = d sum(dy * y)/dx of the training call, then the gradients of sum(v * dx) with respect
        to x, dy and gamma, with the backend's own nested autodiff."""
        layer, b, dt = self.layer, self.backend, self.params["dtype"]
        xt = _to_backend(b, x, dt)
        dyt, vt = (_to_backend(b, a, "float64" if dt == "float64" else "float32") for a in (dy, v))
        tv = [w.value for w in layer.trainable_variables]
        ntv = [w.value for w in layer.non_trainable_variables]
        if b == "tensorflow":
            import tensorflow as tf
            tvt = [tf.convert_to_tensor(w) for w in tv]
            with tf.GradientTape() as outer:
                outer.watch([xt, dyt] + tvt)
                with tf.GradientTape() as inner:
                    inner.watch(xt)
                    y, _ = layer.stateless_call(tvt, ntv, xt, training=True)
                    loss = tf.reduce_sum(tf.cast(y, dyt.dtype) * dyt)
                gx = inner.gradient(loss, xt)
                f = tf.reduce_sum(tf.cast(gx, vt.dtype) * vt)
            g = outer.gradient(f, [xt, dyt] + tvt)
        elif b == "jax":
            import jax
            import jax.numpy as jnp

            def dx(xx, d, tvv):
                return jax.grad(lambda x_: jnp.sum(layer.stateless_call(tvv, ntv, x_, training=True)[0]
                                                   .astype(d.dtype) * d))(xx)
            g = jax.grad(lambda xx, d, tvv: jnp.sum(dx(xx, d, tvv).astype(vt.dtype) * vt),
                         argnums=(0, 1, 2))(xt, dyt, tv)
            g = [g[0], g[1]] + list(g[2])
        else:
            import torch
            xg, dg = xt.clone().requires_grad_(True), dyt.clone().requires_grad_(True)
            tvt = [w.detach().clone().requires_grad_(True) for w in tv]
            y, _ = layer.stateless_call(tvt, ntv, xg, training=True)
            gx, = torch.autograd.grad((y.to(dg.dtype) * dg).sum(), xg, create_graph=True)
            g = torch.autograd.grad((gx.to(vt.dtype) * vt).sum(), [xg, dg] + tvt, allow_unused=True)
            g = [torch.zeros_like(w) if a is None else a for a, w in zip(g, [xg, dg] + tvt)]
        out = {"ddx": _np(b, g[0])[0], "ddy": _np(b, g[1])[0]}
        if len(g) == 4:  # [gamma, beta] in Keras' variable order
            out["ddweight"] = _np(b, g[2])[0]
        return out

    def freeze(self):
        """The Keras fine-tuning freeze."""
        self.layer.trainable = False

    def forward_masked(self, x, mask, training):
        """Keras takes a mask of one dimension less than the input and expands it on the last
        axis (BatchNormalization._moments): a per-position mask exists for channels last only."""
        if self.params["feature_axis"] != self.params["rank"] - 1:
            raise Unsupported("keras BatchNormalization expands the mask on the last axis: channels last only")
        m = _to_backend(self.backend, np.asarray(mask)[..., 0].astype(np.float32), "float32")
        y = self.layer(_to_backend(self.backend, x, self.params["dtype"]), training=training, mask=m)
        return {"y": _np(self.backend, y)[0]}

    def renorm_stats(self):
        return (_np(self.backend, self.layer.renorm_mean.value)[0],
                _np(self.backend, self.layer.renorm_stddev.value)[0])

    def running_stats(self):
        return (_np(self.backend, self.layer.moving_mean.value)[0],
                _np(self.backend, self.layer.moving_variance.value)[0])

    def counter(self):
        return None


def _versions(backend):
    def versions():
        keras = _keras(backend)
        v = {"keras": keras.__version__, "backend": backend}
        mod = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
        v[mod] = __import__(mod).__version__
        return v
    return versions


def _devices(backend):
    def devices():
        _keras(backend)
        if backend == "torch":
            import torch
            return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        if backend == "jax":
            import jax
            return ["cpu"] + (["gpu"] if any(d.platform == "gpu" for d in jax.devices()) else [])
        import tensorflow as tf
        return ["cpu"] + (["gpu"] if tf.config.list_physical_devices("GPU") else [])
    return devices


def _build(backend):
    def build(params, device):
        if device != "cpu":
            raise Unsupported("the keras adapter runs on the backend's default device only")
        return _Instance(backend, params)
    return build


def implementations():
    out = []
    for backend, family in BACKEND_FAMILY.items():
        # on the jax backend every eager op compiles once per input shape: a finite layout pool
        # JAX records no gradients ambiently (jax.grad is a transform, not a mode): no probe there
        caps = default_capabilities(second_grads=True, freeze=True, mask=True, renorm=True, saved_state=True,
                                    ambient_grad_mode=backend != "jax",
                                    **({"layout_pool": 4} if backend == "jax" else {}))
        out.append(Implementation(f"keras.layers.BatchNormalization[{backend}]", "keras", caps, _build(backend),
                                  _versions(backend), _devices(backend), family))
    return out

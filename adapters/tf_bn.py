"""TensorFlow ops: tf.nn.moments + tf.nn.batch_normalization, tf.compat.v1.nn.fused_batch_norm,
and tf.compat.v1.layers.batch_normalization (described in a source document; probed, and
recorded with its error where it is gone)."""
import numpy as np

from ._protocol import Implementation, Unsupported, default_capabilities, np_out

FAMILY = "tensorflow"


def _tf():
    import tensorflow as tf
    return tf


def _t(a, dtype):
    tf = _tf()
    return tf.cast(tf.constant(np.asarray(a, np.float32 if dtype == "bfloat16" else a.dtype)), dtype)


def _np(t):
    tf = _tf()
    name = t.dtype.name
    return np_out((tf.cast(t, tf.float32) if name == "bfloat16" else t).numpy().copy(), name)


def _param_dtype(dtype):
    return "float64" if dtype == "float64" else "float32"


def _affine(params):
    c, pd = params["num_features"], _param_dtype(params["dtype"])
    if params["affine"] == "random":
        return _t(params["weight"], pd), _t(params["bias"], pd)
    return _t(np.ones(c), pd), _t(np.zeros(c), pd)


def _grad_grad(call, params, x, dy, v, with_weight):
    """Nested tapes, as TF users take second derivatives: dx = d sum(dy * y)/dx recorded by an
    outer tape, then the gradients of sum(v * dx) with respect to x, dy and gamma."""
    tf = _tf()
    xt = _t(x, params["dtype"])
    w, b = _affine(params)
    dyt, vt = tf.constant(np.asarray(dy, np.float64)), tf.constant(np.asarray(v, np.float64))
    with tf.GradientTape() as outer:
        outer.watch([xt, dyt, w])
        with tf.GradientTape() as inner:
            inner.watch(xt)
            loss = tf.reduce_sum(tf.cast(call(xt, w, b), tf.float64) * dyt)
        f = tf.reduce_sum(tf.cast(inner.gradient(loss, xt), tf.float64) * vt)
    gx, gdy, gw = outer.gradient(f, [xt, dyt, w], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    out = {"ddx": _np(gx)[0], "ddy": _np(gdy)[0]}
    if with_weight:
        out["ddweight"] = _np(gw)[0]
    return out


class _MomentsInstance:
    """The stateless pair: no running statistics and no eval mode of its own."""

    def __init__(self, params):
        if params["eps"] == "default":
            raise Unsupported("tf.nn.batch_normalization has no default variance_epsilon")
        self.params = params
        self.off = params["affine"] == "off"

    def forward(self, x, training, dy):
        tf = _tf()
        if not training:
            raise Unsupported("stateless op: no eval mode (no running statistics)")
        p = self.params
        xt = _t(x, p["dtype"])
        w, b = _affine(p)
        with tf.GradientTape() as tape:
            tape.watch([xt, w, b])
            y = self._y(xt, w, b)
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * tf.constant(np.asarray(dy if dy is not None else 0, np.float64)))
        out = dict(zip(("y", "y_dtype"), _np(y)))
        if dy is not None:
            gx, gw, gb = tape.gradient(loss, [xt, w, b])
            out["dx"] = _np(gx)[0]
            if not self.off:
                out["dweight"], out["dbias"] = _np(gw)[0], _np(gb)[0]
        return out

    def _y(self, xt, w, b):
        tf, p = _tf(), self.params
        axes = [a for a in range(p["rank"]) if a != p["feature_axis"]]
        shape = [1] * p["rank"]
        shape[p["feature_axis"]] = -1
        mean, var = tf.nn.moments(xt, axes=axes, keepdims=True)
        scale = None if self.off else tf.cast(tf.reshape(w, shape), xt.dtype)
        offset = None if self.off else tf.cast(tf.reshape(b, shape), xt.dtype)
        return tf.nn.batch_normalization(xt, mean, var, offset, scale, float(p["eps"]))

    def grad_grad(self, x, dy, v):
        return _grad_grad(self._y, self.params, x, dy, v, not self.off)

    def running_stats(self):
        return None

    def counter(self):
        return None


class _FusedInstance:
    """FusedBatchNormV3: running statistics kept here and fed back, as tf-keras does."""

    def __init__(self, params):
        if params["affine"] == "off":
            raise Unsupported("fused_batch_norm always takes scale and offset")
        if params["momentum"] is None:
            raise Unsupported("exponential_avg_factor is a float")
        self.params = params
        c = params["num_features"]
        self.rm, self.rv = _t(np.zeros(c), "float32"), _t(np.ones(c), "float32")
        fa, rank = params["feature_axis"], params["rank"]
        if fa == 1:
            self.fmt = "NCHW" if rank == 4 else "NCDHW"
        else:
            self.fmt = "NHWC" if rank == 4 else "NDHWC"

    def _kw(self):
        kw = {"data_format": self.fmt}
        if self.params["eps"] != "default":
            kw["epsilon"] = float(self.params["eps"])
        if self.params["momentum"] != "default":
            kw["exponential_avg_factor"] = float(self.params["momentum"])
        return kw

    def forward(self, x, training, dy):
        tf = _tf()
        xt = _t(x, self.params["dtype"])
        w, b = _affine(self.params)
        with tf.GradientTape() as tape:
            tape.watch([xt, w, b])
            y, m, v = tf.compat.v1.nn.fused_batch_norm(
                xt, w, b, mean=self.rm, variance=self.rv, is_training=training, **self._kw())
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * tf.constant(np.asarray(dy if dy is not None else 0, np.float64)))
        out = dict(zip(("y", "y_dtype"), _np(y)))
        if dy is not None:
            gx, gw, gb = tape.gradient(loss, [xt, w, b])
            out["dx"], out["dweight"], out["dbias"] = _np(gx)[0], _np(gw)[0], _np(gb)[0]
        if training:
            self.rm, self.rv = m, v
        return out

    def grad_grad(self, x, dy, v):
        tf = _tf()
        return _grad_grad(lambda xt, w, b: tf.compat.v1.nn.fused_batch_norm(
            xt, w, b, mean=self.rm, variance=self.rv, is_training=True, **self._kw())[0], self.params, x, dy, v, True)

    def running_stats(self):
        return _np(self.rm)[0], _np(self.rv)[0]

    def counter(self):
        return None


def versions():
    return {"tensorflow": _tf().__version__}


def devices():
    tf = _tf()
    return ["cpu"] + (["gpu"] if tf.config.list_physical_devices("GPU") else [])


def _v1_layers_versions():
    """tf.compat.v1.layers.batch_normalization is what document 001 teaches; probe for it."""
    tf = _tf()
    try:
        fn = tf.compat.v1.layers.batch_normalization
        x = tf.zeros([2, 3])
        with tf.Graph().as_default():
            fn(tf.compat.v1.placeholder(tf.float32, [2, 3]), training=True)
    except Exception as exc:
        raise Unsupported(f"gone in TensorFlow {tf.__version__}: {type(exc).__name__}: {exc}") from None
    del x
    return {"tensorflow": tf.__version__}


def _v1_layers_build(params, device):
    _v1_layers_versions()
    raise Unsupported("graph-mode tf.compat.v1.layers are not driven by this adapter")


def _cpu_only(build):
    def b(params, device):
        if device != "cpu":
            raise Unsupported("this adapter places ops on the default device only")
        return build(params)
    return b


def implementations():
    low = ("float16", "bfloat16", "float32")
    return [
        Implementation("tf.nn.batch_normalization", "keras",
                       default_capabilities(running_stats=False, default_eps=False, default_momentum=False,
                                            explicit_momentum=False, default_init=False, second_grads=True),
                       _cpu_only(_MomentsInstance), versions, devices, FAMILY),
        Implementation("tf.compat.v1.nn.fused_batch_norm", "tf-fused",
                       default_capabilities(ranks=(4, 5), dtypes=low, affine_off=False, default_init=False,
                                            second_grads=True),
                       _cpu_only(_FusedInstance), versions, devices, FAMILY),
        Implementation("tf.compat.v1.layers.batch_normalization", "keras", default_capabilities(),
                       _v1_layers_build, _v1_layers_versions, devices, FAMILY),
    ]

"""JAX family: flax.linen.BatchNorm, flax.nnx.BatchNorm, jax.example_libraries.stax.BatchNorm,
haiku.BatchNorm (equinox.nn.BatchNorm: equinox_bn.py, on the helpers here).

Gradients through jax.vjp. float64 needs jax_enable_x64, set before the first computation.
"""
import numpy as np

from ._protocol import Implementation, Unsupported, default_capabilities, np_out

FAMILY = "jax"


def _jax():
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax


def _arr(a, dtype):
    """NumPy to a device array of `dtype` without running a JAX op (an eager op would
    compile once per shape, and so does jnp.asarray): bfloat16 through ml_dtypes, JAX's own NumPy bfloat16."""
    import ml_dtypes
    jax = _jax()
    a = np.asarray(a)
    want = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    return jax.device_put(a.astype(np.float32).astype(want) if dtype == "bfloat16" else a.astype(want))


def _np(a):
    name = str(a.dtype)
    h = np.asarray(a)
    return np_out(h.astype(np.float32) if name == "bfloat16" else h, name)


def _param_dtype(dtype):
    return "float64" if dtype == "float64" else "float32"


def _probe_x(params):
    s = [2] * params["rank"]
    s[params["feature_axis"]] = params["num_features"]
    return _arr(np.zeros(s, np.float32), params["dtype"])


def _kw(params, eps_name="epsilon", mom_name="momentum"):
    kw = {}
    if params["eps"] != "default":
        kw[eps_name] = float(params["eps"])
    if params["momentum"] != "default":
        if params["momentum"] is None:
            raise Unsupported("momentum is a float here")
        kw[mom_name] = float(params["momentum"])
    return kw


def _grads_out(g_params, gx, w_path, b_path):
    out = {"dx": _np(gx)[0]}
    if w_path is not None:
        out["dweight"] = _np(w_path(g_params))[0].reshape(-1)
        out["dbias"] = _np(b_path(g_params))[0].reshape(-1)
    return out


_FNS = {}


def _cached(key, make):
    """Compiled functions (and initial variables) per layer configuration, shared by every
    instance of it. eps and momentum are not part of the key: they are passed to the jitted
    function as Python floats, which JAX traces as weakly typed scalars, so one program
    serves every value, with the same arithmetic as a Python-float constant (bitwise: see
    tests/test_jax_adapters.py). A new value of a constant would otherwise recompile."""
    if key not in _FNS:
        _FNS[key] = make()
    return _FNS[key]


def _hyper(params, cls, eps_name="epsilon", mom_name="momentum"):
    """(names, values) of eps and momentum as traced arguments. A default is the library's
    own: read from `cls`'s signature, so BN-DEFAULT-EPS still measures the library (and the
    program is the same for default and explicit values)."""
    import inspect
    kw = _kw(params, eps_name, mom_name)
    sig = inspect.signature(cls).parameters
    for name in (eps_name, mom_name):
        if name and name not in kw and name in sig and sig[name].default is not inspect.Parameter.empty:
            kw[name] = float(sig[name].default)
    return tuple(sorted(kw)), kw


class _Grad:
    """The compiled backward pass, called as grad(prm, state, x, dy, hyper, training), and
    .second(prm, state, x, dy, v, hyper): jax.grad of sum(v * dx) with respect to (x, dy, prm),
    dx the training gradient, as JAX users take second derivatives."""

    def __init__(self, jax, fwd):
        def run(prm, state, xx, dy, hyper, training):
            y, vjp, new = jax.vjp(lambda p, x: fwd(p, state, x, hyper, training), prm, xx, has_aux=True)
            gp, gx = vjp(dy.astype(y.dtype))
            return y, new, gp, gx

        def second(prm, state, xx, dy, v, hyper):
            def outer(x, d, p):
                return (run(p, state, x, d, hyper, True)[3] * v.astype(x.dtype)).sum()
            return jax.grad(outer, argnums=(0, 1, 2))(xx, dy, prm)
        self.run, self.second = jax.jit(run, static_argnums=5), jax.jit(second)

    def __call__(self, *a):
        return self.run(*a)


def _with_grad(jax, fwd):
    return _Grad(jax, fwd)


class _Functional:
    """Common driver: plain(prm, state, x, hyper, training) and grad(prm, state, x, dy, hyper, training)."""
    w_path = b_path = None

    def forward(self, x, training, dy):
        xt = _arr(x, self.p["dtype"])
        if dy is None:
            y, new = self.plain(self.prm, self.state, xt, self.hyper, training)
            out = {}
        else:
            y, new, gp, gx = self.grad(self.prm, self.state, xt, _arr(dy, self.p["dtype"]), self.hyper, training)
            aff = self.p["affine"] != "off"
            out = _grads_out(gp, gx, self.w_path if aff else None, self.b_path if aff else None)
        if training:
            self.state = new
        out["y"], out["y_dtype"] = _np(y)
        return out

    def reload(self):
        """BN-STATE-PERSIST the Flax way: flax.serialization.to_bytes of the parameters and the
        batch_stats, restored with from_bytes into a freshly built layer (built without the
        case's random scale/bias: the checkpoint must bring them back)."""
        from flax import serialization
        blob = serialization.to_bytes({"params": self.prm, "batch_stats": self.state})
        fresh = type(self)(dict(self.p, affine="default" if self.p["affine"] == "random" else self.p["affine"]))
        restored = serialization.from_bytes({"params": fresh.prm, "batch_stats": fresh.state}, blob)
        self.prm, self.state = restored["params"], restored["batch_stats"]

    def to_float64(self):
        """Flax converts no layer's dtype in place (a new layer is built with another param_dtype):
        nothing to judge."""
        return {}

    def forward_masked(self, x, mask, training):
        """Flax's mask= (broadcastable to x, True where a position counts), on a training call."""
        if not training:
            raise Unsupported("the mask is given to training calls")
        y, self.state = self.masked(self.prm, self.state, _arr(x, self.p["dtype"]), _jax().device_put(mask),
                                    self.hyper)
        return {"y": _np(y)[0]}

    def grad_grad(self, x, dy, v):
        dt = self.p["dtype"]
        gx, gdy, gp = self.grad.second(self.prm, self.state, _arr(x, dt), _arr(dy, dt), _arr(v, dt), self.hyper)
        out = {"ddx": _np(gx)[0], "ddy": _np(gdy)[0]}
        if self.p["affine"] != "off" and self.w_path is not None:
            out["ddweight"] = _np(self.w_path(gp))[0].reshape(-1)
        return out

    def counter(self):
        return None


def _initial(key, params, init):
    """Initial variables: they depend on the configuration and the channel count only, and
    are made once per key under jit (eagerly, each op would compile per shape)."""
    jax = _jax()
    return _cached(("init",) + key + (params["num_features"],), lambda: jax.jit(init)())


def _probe2(params):
    """A (2, C) probe for initializers that only read the channel count."""
    return _arr(np.zeros((2, params["num_features"]), np.float32), params["dtype"])


# ----------------------------------------------------------------------- flax.linen
class _Linen(_Functional):
    w_path, b_path = staticmethod(lambda g: g["scale"]), staticmethod(lambda g: g["bias"])

    def __init__(self, params):
        jax = _jax()
        self.p = params
        aff = params["affine"] != "off"
        import flax.linen as nn
        names, self.hyper = _hyper(params, nn.BatchNorm)
        cfg = ("linen", params["feature_axis"], aff, params["dtype"], _param_dtype(params["dtype"]), names)

        def layer(**hyper):
            import flax.linen as nn
            return nn.BatchNorm(use_running_average=None, axis=cfg[1], use_bias=aff, use_scale=aff, dtype=cfg[3],
                                param_dtype=cfg[4], **hyper)

        def make():
            def fwd(prm, stats, xx, hyper, training):
                bn, v = layer(**hyper), {"params": prm, "batch_stats": stats}
                if training:
                    y, upd = bn.apply(v, xx, use_running_average=False, mutable=["batch_stats"])
                    return y, upd["batch_stats"]
                return bn.apply(v, xx, use_running_average=True), stats

            def masked(prm, stats, xx, mask, hyper):
                y, upd = layer(**hyper).apply({"params": prm, "batch_stats": stats}, xx, use_running_average=False,
                                              mask=mask, mutable=["batch_stats"])
                return y, upd["batch_stats"]
            return jax.jit(fwd, static_argnums=4), _with_grad(jax, fwd), jax.jit(masked)
        self.plain, self.grad, self.masked = _cached(cfg, make)
        def init():
            import flax.linen as nn  # a channels-last layer: same (C,) variables, one probe shape
            return nn.BatchNorm(use_running_average=None, axis=-1, use_bias=aff, use_scale=aff,
                                param_dtype=cfg[4]).init(jax.random.PRNGKey(0), _probe2(params),
                                                         use_running_average=False)
        v = _initial(("linen", aff, cfg[4]), params, init)
        self.prm, self.state = dict(v.get("params", {})), v["batch_stats"]
        if params["affine"] == "random":
            self.prm = {"scale": _arr(params["weight"], cfg[4]), "bias": _arr(params["bias"], cfg[4])}

    def running_stats(self):
        return _np(self.state["mean"])[0].reshape(-1), _np(self.state["var"])[0].reshape(-1)


# ------------------------------------------------------------------------- flax.nnx
class _Nnx(_Functional):
    """nnx through its functional API (split/merge) under jax.jit: the layer is built once per
    configuration with the library's defaults, and the case's eps and momentum are set on
    the merged copy inside the trace, as the attributes its __call__ reads. Parameters and
    statistics cross the jit boundary as plain dicts of arrays: nnx State pytrees returned
    from one call do not match the cached program of the next (a recompile per call)."""
    w_path, b_path = staticmethod(lambda g: g["scale"]), staticmethod(lambda g: g["bias"])

    def __init__(self, params):
        jax = _jax()
        self.p = params
        aff = params["affine"] != "off"
        from flax import nnx
        names, self.hyper = _hyper(params, nnx.BatchNorm)
        cfg = ("nnx", params["feature_axis"], aff, params["dtype"], _param_dtype(params["dtype"]), names,
               params["num_features"])

        def make():
            bn = nnx.BatchNorm(params["num_features"], axis=cfg[1], use_bias=aff, use_scale=aff, dtype=cfg[3],
                               param_dtype=cfg[4], rngs=nnx.Rngs(0))
            graphdef, p_tmpl, s_tmpl = nnx.split(bn, nnx.Param, ...)

            def call(prm, state, xx, hyper, training, mask):
                ps, ss = jax.tree.map(lambda a: a, p_tmpl), jax.tree.map(lambda a: a, s_tmpl)
                nnx.replace_by_pure_dict(ps, prm)
                nnx.replace_by_pure_dict(ss, state)
                m = nnx.merge(graphdef, ps, ss)
                for k, v in hyper.items():
                    setattr(m, k, v)
                m.train() if training else m.eval()
                y = m(xx, mask=mask)
                return y, nnx.split(m, nnx.Param, ...)[2].to_pure_dict()

            def fwd(prm, state, xx, hyper, training):
                return call(prm, state, xx, hyper, training, None)

            def masked(prm, state, xx, mask, hyper):
                return call(prm, state, xx, hyper, True, mask)
            return (p_tmpl.to_pure_dict(), s_tmpl.to_pure_dict()), jax.jit(fwd, static_argnums=4), \
                _with_grad(jax, fwd), jax.jit(masked)
        (self.prm, self.state), self.plain, self.grad, self.masked = _cached(cfg, make)
        if params["affine"] == "random":
            self.prm = {"scale": _arr(params["weight"], cfg[4]), "bias": _arr(params["bias"], cfg[4])}

    def running_stats(self):
        return _np(self.state["mean"])[0].reshape(-1), _np(self.state["var"])[0].reshape(-1)


# ----------------------------------------------------------------------------- stax
class _Stax(_Functional):
    """No running statistics: batch statistics in every mode (jax-ml/jax#139)."""
    w_path, b_path = staticmethod(lambda g: g[1]), staticmethod(lambda g: g[0])

    def __init__(self, params):
        jax = _jax()
        self.p = params
        fa, rank = params["feature_axis"], params["rank"]
        axes = tuple(a for a in range(rank) if a != fa)
        aff = params["affine"] != "off"
        from jax.example_libraries import stax
        names, self.hyper = _hyper(dict(params, momentum="default"), stax.BatchNorm, "epsilon", None)
        cfg = ("stax", axes, aff, names)

        def make():
            from jax.example_libraries import stax

            def fwd(prm, state, xx, hyper, training):
                return stax.BatchNorm(axis=axes, center=aff, scale=aff, **hyper)[1](prm, xx), state
            return jax.jit(fwd, static_argnums=4), _with_grad(jax, fwd)
        self.plain, self.grad = _cached(cfg, make)
        shp = [2] * rank
        shp[fa] = params["num_features"]

        def init():
            from jax.example_libraries import stax
            return stax.BatchNorm(axis=axes, center=aff, scale=aff)[0](jax.random.PRNGKey(0), tuple(shp))[1]
        prm = _cached(("init",) + cfg + (params["num_features"], rank), init)
        if params["affine"] == "random":
            prm = (_arr(params["bias"], params["dtype"]), _arr(params["weight"], params["dtype"]))
        elif aff:
            prm = tuple(p.astype(params["dtype"]) for p in prm)
        self.prm, self.state = prm, ()

    def running_stats(self):
        return None


# ---------------------------------------------------------------------------- haiku
class _Haiku(_Functional):
    w_path = staticmethod(lambda g: next(iter(g.values()))["scale"])
    b_path = staticmethod(lambda g: next(iter(g.values()))["offset"])

    def __init__(self, params):
        jax = _jax()
        if params["momentum"] in ("default", None):
            raise Unsupported("haiku.BatchNorm requires decay_rate (no default)")
        if params["feature_axis"] not in (1, params["rank"] - 1):
            raise Unsupported("haiku data_format is channels_first or channels_last")
        self.p = params
        aff = params["affine"] != "off"
        fmt = "channels_first" if params["feature_axis"] == 1 and params["rank"] > 2 else "channels_last"
        import haiku as hk
        names, self.hyper = _hyper(params, hk.BatchNorm, "eps", "decay_rate")
        cfg = ("haiku", aff, fmt, names)

        def transformed():
            import haiku as hk

            def body(x, is_training, hyper):
                return hk.BatchNorm(create_scale=aff, create_offset=aff, data_format=fmt, **hyper)(x, is_training)
            return hk.transform_with_state(body)

        def make():
            f = transformed()

            def fwd(prm, state, xx, hyper, training):
                return f.apply(prm, state, None, xx, training, hyper)
            return jax.jit(fwd, static_argnums=4), _with_grad(jax, fwd)
        self.plain, self.grad = _cached(cfg, make)
        # haiku creates its variables in the input's dtype: the dtype is part of the key
        self.prm, self.state = _initial(cfg + (params["rank"], params["dtype"]), params, lambda: transformed().init(
            jax.random.PRNGKey(0), _probe_x(params), True, {"decay_rate": 0.9}))
        if params["affine"] == "random":
            mod = next(iter(self.prm))
            shp = self.prm[mod]["scale"].shape
            self.prm = {mod: {"scale": _arr(params["weight"], _param_dtype(params["dtype"])).reshape(shp),
                              "offset": _arr(params["bias"], _param_dtype(params["dtype"])).reshape(shp)}}

    def running_stats(self):
        mean = next(v for k, v in self.state.items() if k.endswith("mean_ema"))
        var = next(v for k, v in self.state.items() if k.endswith("var_ema"))
        return _np(mean["average"])[0].reshape(-1), _np(var["average"])[0].reshape(-1)


def versions():
    import flax
    import haiku
    import equinox
    jax = _jax()
    return {"jax": jax.__version__, "flax": flax.__version__, "dm-haiku": haiku.__version__,
            "equinox": equinox.__version__}


def devices():
    jax = _jax()
    return ["cpu"] + (["gpu"] if any(d.platform == "gpu" for d in jax.devices()) else [])


def _on(device, make):
    jax = _jax()
    dev = jax.devices("cpu" if device == "cpu" else "gpu")[0]
    jax.config.update("jax_default_device", dev)
    return make()


def _build(cls, *a):
    return lambda params, device: _on(device, lambda: cls(params, *a))


# XLA compiles a program per input shape (about 0.3 s for a BN forward and backward): cases
# take their layouts from a per-run pool of this many per dtype (strategies.layout_pool).
LAYOUT_POOL = 4


def caps(**over):
    return default_capabilities(layout_pool=LAYOUT_POOL, **over)


def implementations():
    return [
        Implementation("flax.linen.BatchNorm", "flax", caps(second_grads=True, mask=True, saved_state=True),
                       _build(_Linen), versions, devices, FAMILY),
        Implementation("flax.nnx.BatchNorm", "flax", caps(second_grads=True, mask=True, saved_state=True),
                       _build(_Nnx), versions, devices, FAMILY),
        Implementation("jax.example_libraries.stax.BatchNorm", "stax",
                       caps(running_stats=False, explicit_momentum=False, default_momentum=False,
                            eval_batch_stats=True, second_grads=True),
                       _build(_Stax), versions, devices, FAMILY),
        Implementation("haiku.BatchNorm", "haiku", caps(default_momentum=False, second_grads=True), _build(_Haiku),
                       versions, devices, FAMILY),
    ]

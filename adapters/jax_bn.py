"""JAX family: flax.linen.BatchNorm, flax.nnx.BatchNorm, jax.example_libraries.stax.BatchNorm,
haiku.BatchNorm, equinox.nn.BatchNorm (mode="ema" and mode="batch").

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
    import jax.numpy as jnp
    _jax()
    return jnp.asarray(np.asarray(a, np.float32 if dtype == "bfloat16" else a.dtype)).astype(dtype)


def _np(a):
    name = str(a.dtype)
    return np_out(np.array(a.astype("float32") if name == "bfloat16" else a), name)


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
    """Jitted functions per layer configuration, shared by every instance of that
    configuration: a relation check's extra calls reuse the compiled code."""
    if key not in _FNS:
        _FNS[key] = make()
    return _FNS[key]


def _with_grad(jax, fwd):
    def run(prm, state, xx, dy, training):
        y, vjp, new = jax.vjp(lambda p, x: fwd(p, state, x, training), prm, xx, has_aux=True)
        gp, gx = vjp(dy.astype(y.dtype))
        return y, new, gp, gx
    return jax.jit(run, static_argnums=4)


class _Functional:
    """Common driver: fns = (init_params, init_state, plain(prm, state, x, training), grad(...))."""
    w_path = b_path = None

    def forward(self, x, training, dy):
        xt = _arr(x, self.p["dtype"])
        if dy is None:
            y, new = self.plain(self.prm, self.state, xt, training)
            out = {}
        else:
            y, new, gp, gx = self.grad(self.prm, self.state, xt, _arr(dy, self.p["dtype"]), training)
            aff = self.p["affine"] != "off"
            out = _grads_out(gp, gx, self.w_path if aff else None, self.b_path if aff else None)
        if training:
            self.state = new
        out["y"], out["y_dtype"] = _np(y)
        return out

    def counter(self):
        return None


# ----------------------------------------------------------------------- flax.linen
class _Linen(_Functional):
    w_path, b_path = staticmethod(lambda g: g["scale"]), staticmethod(lambda g: g["bias"])

    def __init__(self, params):
        jax = _jax()
        self.p = params
        aff = params["affine"] != "off"
        cfg = ("linen", params["feature_axis"], aff, params["dtype"], _param_dtype(params["dtype"]),
               tuple(sorted(_kw(params).items())))

        def make():
            import flax.linen as nn
            bn = nn.BatchNorm(use_running_average=None, axis=cfg[1], use_bias=aff, use_scale=aff, dtype=cfg[3],
                              param_dtype=cfg[4], **dict(cfg[5]))

            def fwd(prm, stats, xx, training):
                v = {"params": prm, "batch_stats": stats}
                if training:
                    y, upd = bn.apply(v, xx, use_running_average=False, mutable=["batch_stats"])
                    return y, upd["batch_stats"]
                return bn.apply(v, xx, use_running_average=True), stats
            return bn, jax.jit(fwd, static_argnums=3), _with_grad(jax, fwd)
        bn, self.plain, self.grad = _cached(cfg, make)
        v = bn.init(jax.random.PRNGKey(0), _probe_x(params), use_running_average=False)
        self.prm, self.state = dict(v.get("params", {})), v["batch_stats"]
        if params["affine"] == "random":
            self.prm = {"scale": _arr(params["weight"], cfg[4]), "bias": _arr(params["bias"], cfg[4])}

    def running_stats(self):
        return _np(self.state["mean"])[0].reshape(-1), _np(self.state["var"])[0].reshape(-1)


# ------------------------------------------------------------------------- flax.nnx
def _nnx_fns():
    def make():
        from flax import nnx

        @nnx.jit(static_argnums=3)
        def plain(model, xx, dy, training):
            model.train() if training else model.eval()
            return model(xx)

        @nnx.jit(static_argnums=3)
        def grad(model, xx, dy, training):
            model.train() if training else model.eval()

            def loss(m, x):
                y = m(x)
                return (y * dy.astype(y.dtype)).sum().astype("float64" if y.dtype == "float64" else "float32"), y
            (_, y), (gm, gx) = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(model, xx)
            return y, gm, gx
        return plain, grad
    return _cached(("nnx",), make)


class _Nnx:
    def __init__(self, params):
        from flax import nnx
        _jax()
        self.p = params
        aff = params["affine"] != "off"
        self.bn = nnx.BatchNorm(params["num_features"], axis=params["feature_axis"], use_bias=aff, use_scale=aff,
                                dtype=params["dtype"], param_dtype=_param_dtype(params["dtype"]), rngs=nnx.Rngs(0),
                                **_kw(params))
        if params["affine"] == "random":
            self.bn.scale.value = _arr(params["weight"], _param_dtype(params["dtype"]))
            self.bn.bias.value = _arr(params["bias"], _param_dtype(params["dtype"]))
        self.plain, self.grad = _nnx_fns()

    def forward(self, x, training, dy):
        xt = _arr(x, self.p["dtype"])
        if dy is None:
            y = self.plain(self.bn, xt, None, training)
            out = {}
        else:
            y, gm, gx = self.grad(self.bn, xt, _arr(dy, self.p["dtype"]), training)
            aff = self.p["affine"] != "off"
            out = _grads_out(gm, gx, (lambda g: g["scale"].value) if aff else None,
                             (lambda g: g["bias"].value) if aff else None)
        out["y"], out["y_dtype"] = _np(y)
        return out

    def running_stats(self):
        return _np(self.bn.mean.value)[0].reshape(-1), _np(self.bn.var.value)[0].reshape(-1)

    def counter(self):
        return None


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
        kw = {} if params["eps"] == "default" else {"epsilon": float(params["eps"])}
        cfg = ("stax", axes, aff, tuple(kw.items()))

        def make():
            from jax.example_libraries import stax
            init_fun, apply = stax.BatchNorm(axis=axes, center=aff, scale=aff, **kw)

            def fwd(prm, state, xx, training):
                return apply(prm, xx), state
            return init_fun, jax.jit(fwd, static_argnums=3), _with_grad(jax, fwd)
        init_fun, self.plain, self.grad = _cached(cfg, make)
        shp = [2] * rank
        shp[fa] = params["num_features"]
        _, prm = init_fun(jax.random.PRNGKey(0), tuple(shp))
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
        kw = {} if params["eps"] == "default" else {"eps": float(params["eps"])}
        cfg = ("haiku", aff, fmt, float(params["momentum"]), tuple(kw.items()))

        def make():
            import haiku as hk

            def body(x, is_training):
                return hk.BatchNorm(create_scale=aff, create_offset=aff, decay_rate=cfg[3], data_format=fmt,
                                    **kw)(x, is_training)
            f = hk.transform_with_state(body)

            def fwd(prm, state, xx, training):
                return f.apply(prm, state, None, xx, training)
            return f, jax.jit(fwd, static_argnums=3), _with_grad(jax, fwd)
        f, self.plain, self.grad = _cached(cfg, make)
        self.prm, self.state = f.init(jax.random.PRNGKey(0), _probe_x(params), True)
        if params["affine"] == "random":
            mod = next(iter(self.prm))
            shp = self.prm[mod]["scale"].shape
            self.prm = {mod: {"scale": _arr(params["weight"], _param_dtype(params["dtype"])).reshape(shp),
                              "offset": _arr(params["bias"], _param_dtype(params["dtype"])).reshape(shp)}}

    def running_stats(self):
        mean = next(v for k, v in self.state.items() if k.endswith("mean_ema"))
        var = next(v for k, v in self.state.items() if k.endswith("var_ema"))
        return _np(mean["average"])[0].reshape(-1), _np(var["average"])[0].reshape(-1)


# -------------------------------------------------------------------------- equinox
def _eqx_fns():
    def make():
        import equinox as eqx
        jax = _jax()

        def fwd(model, state, xx):
            return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(xx, state)

        @eqx.filter_jit
        def plain(model, state, xx):
            return fwd(model, state, xx)

        @eqx.filter_jit
        def grad(model, state, xx, dy):
            def f(wb, x):
                m = eqx.tree_at(lambda mm: (mm.weight, mm.bias), model, wb)
                return fwd(m, state, x)
            y, vjp, new = jax.vjp(f, (model.weight, model.bias), xx, has_aux=True)
            gwb, gx = vjp(dy.astype(y.dtype))
            return y, new, gwb, gx

        @eqx.filter_jit
        def grad_x(model, state, xx, dy):
            y, vjp, new = jax.vjp(lambda x: fwd(model, state, x), xx, has_aux=True)
            return y, new, None, vjp(dy.astype(y.dtype))[0]
        return plain, grad, grad_x
    return _cached(("equinox",), make)


class _Equinox:
    def __init__(self, params, mode):
        import warnings

        import equinox as eqx
        _jax()
        self.p, self.eqx, self.mode = params, eqx, mode
        if params["feature_axis"] != 1:
            raise Unsupported("equinox BatchNorm normalizes per example with channels first")
        kw = {}
        if params["eps"] != "default":
            kw["eps"] = float(params["eps"])
        if params["momentum"] != "default":
            if params["momentum"] is None:
                raise Unsupported("momentum is a float here")
            kw["momentum"] = float(params["momentum"])
        self.aff = params["affine"] != "off"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.bn, self.state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(
                params["num_features"], axis_name="batch", channelwise_affine=self.aff, mode=mode,
                dtype=_param_dtype(params["dtype"]), **kw)
        if params["affine"] == "random":
            self.bn = eqx.tree_at(lambda m: (m.weight, m.bias), self.bn,
                                  (_arr(params["weight"], _param_dtype(params["dtype"])),
                                   _arr(params["bias"], _param_dtype(params["dtype"]))))
        self.plain, self.grad, self.grad_x = _eqx_fns()

    def forward(self, x, training, dy):
        import warnings
        xt = _arr(x, self.p["dtype"])
        model = self.bn if training else self.eqx.nn.inference_mode(self.bn)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dy is None:
                y, new = self.plain(model, self.state, xt)
                out = {}
            else:
                fn = self.grad if self.aff else self.grad_x
                y, new, gwb, gx = fn(model, self.state, xt, _arr(dy, self.p["dtype"]))
                out = _grads_out(gwb, gx, (lambda g: g[0]) if self.aff else None, (lambda g: g[1]) if self.aff else None)
        if training:
            self.state = new
        out["y"], out["y_dtype"] = _np(y)
        return out

    def running_stats(self):
        """What eval normalizes with: the EMA state ("ema"), or the hidden averages divided by
        1 - momentum^count ("batch", equinox's zero-debiasing)."""
        if self.mode == "ema":
            mean, var = self.state.get(self.bn.ema_state_index)
            return _np(mean)[0].reshape(-1), _np(var)[0].reshape(-1)
        hm, hv = self.state.get(self.bn.batch_state_index)
        count = int(np.asarray(self.state.get(self.bn.batch_counter)))
        scale = 1.0 if count == 0 else 1.0 - float(self.bn.momentum) ** count
        return _np(hm)[0].reshape(-1) / scale, _np(hv)[0].reshape(-1) / scale

    def counter(self):
        return None


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


def implementations():
    caps = default_capabilities
    return [
        Implementation("flax.linen.BatchNorm", "flax", caps(), _build(_Linen), versions, devices, FAMILY),
        Implementation("flax.nnx.BatchNorm", "flax", caps(), _build(_Nnx), versions, devices, FAMILY),
        Implementation("jax.example_libraries.stax.BatchNorm", "stax",
                       caps(running_stats=False, explicit_momentum=False, default_momentum=False,
                            eval_batch_stats=True),
                       _build(_Stax), versions, devices, FAMILY),
        Implementation("haiku.BatchNorm", "haiku", caps(default_momentum=False), _build(_Haiku), versions, devices,
                       FAMILY),
        Implementation("equinox.nn.BatchNorm[mode=ema]", "flax", caps(feature_axes=("first",)),
                       _build(_Equinox, "ema"), versions, devices, FAMILY),
        Implementation("equinox.nn.BatchNorm[mode=batch]", "haiku", caps(feature_axes=("first",)),
                       _build(_Equinox, "batch"), versions, devices, FAMILY),
    ]

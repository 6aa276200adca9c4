"""equinox.nn.BatchNorm, mode="ema" and mode="batch", under vmap with a named batch axis.
The JAX helpers (x64, caching of compiled programs, device placement) are jax_bn.py's."""
import numpy as np

from ._protocol import Implementation, Unsupported
from .jax_bn import FAMILY, _arr, _cached, _grads_out, _hyper, _jax, _np, _on, _param_dtype, caps, devices, versions


def _eqx_fns():
    """eps and momentum are static fields of an equinox module (part of the compiled
    program's key): the layer is built with the library's values and the case's are set on
    the traced copy, as the attributes __call__ reads (bitwise the same results: see
    tests/test_jax_adapters.py)."""
    def make():
        import equinox as eqx
        jax = _jax()

        def fwd(model, state, xx, hyper):
            for k, v in hyper.items():
                object.__setattr__(model, k, v)
            return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(xx, state)

        @eqx.filter_jit
        def plain(model, state, xx, hyper):
            return fwd(model, state, xx, hyper)

        @eqx.filter_jit
        def grad(model, state, xx, dy, hyper):
            def f(wb, x):
                m = eqx.tree_at(lambda mm: (mm.weight, mm.bias), model, wb)
                return fwd(m, state, x, hyper)
            y, vjp, new = jax.vjp(f, (model.weight, model.bias), xx, has_aux=True)
            gwb, gx = vjp(dy.astype(y.dtype))
            return y, new, gwb, gx

        @eqx.filter_jit
        def grad_x(model, state, xx, dy, hyper):
            y, vjp, new = jax.vjp(lambda x: fwd(model, state, x, hyper), xx, has_aux=True)
            return y, new, None, vjp(dy.astype(y.dtype))[0]
        @eqx.filter_jit
        def second(model, state, xx, dy, v, hyper, wb):
            """jax.grad of sum(v * dx) with respect to (x, dy, (weight, bias)); wb is () without affine."""
            def outer(x, d, wb):
                m = eqx.tree_at(lambda mm: (mm.weight, mm.bias), model, wb) if wb else model
                y, vjp, _ = jax.vjp(lambda xi: fwd(m, state, xi, hyper), x, has_aux=True)
                return (vjp(d.astype(y.dtype))[0] * v.astype(x.dtype)).sum()
            return jax.grad(outer, argnums=(0, 1, 2))(xx, dy, wb)
        return plain, grad, grad_x, second
    return _cached(("equinox",), make)


class _Equinox:
    def __init__(self, params, mode):
        import warnings

        import equinox as eqx
        _jax()
        self.p, self.eqx, self.mode = params, eqx, mode
        if params["feature_axis"] != 1:
            raise Unsupported("equinox BatchNorm normalizes per example with channels first")
        names, self.hyper = _hyper(params, eqx.nn.BatchNorm, "eps", "momentum")
        # filter_jit keys on Python scalars: weakly typed scalar arrays are traced instead
        import jax.numpy as jnp
        self.traced_hyper = {k: jnp.asarray(v) for k, v in self.hyper.items()}
        self.aff = params["affine"] != "off"
        cfg = ("equinox-layer", mode, self.aff, _param_dtype(params["dtype"]), params["num_features"])

        def build():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return eqx.nn.make_with_state(eqx.nn.BatchNorm)(
                    params["num_features"], axis_name="batch", channelwise_affine=self.aff, mode=mode,
                    dtype=cfg[3])
        self.bn, self.state = _cached(cfg, build)
        if params["affine"] == "random":
            self.bn = eqx.tree_at(lambda m: (m.weight, m.bias), self.bn,
                                  (_arr(params["weight"], _param_dtype(params["dtype"])),
                                   _arr(params["bias"], _param_dtype(params["dtype"]))))
        self.plain, self.grad, self.grad_x, self.second = _eqx_fns()

    def forward(self, x, training, dy):
        import warnings
        xt = _arr(x, self.p["dtype"])
        model = self.bn if training else self.eqx.nn.inference_mode(self.bn)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dy is None:
                y, new = self.plain(model, self.state, xt, self.traced_hyper)
                out = {}
            else:
                fn = self.grad if self.aff else self.grad_x
                y, new, gwb, gx = fn(model, self.state, xt, _arr(dy, self.p["dtype"]), self.traced_hyper)
                out = _grads_out(gwb, gx, (lambda g: g[0]) if self.aff else None, (lambda g: g[1]) if self.aff else None)
        if training:
            self.state = new
        out["y"], out["y_dtype"] = _np(y)
        return out

    def grad_grad(self, x, dy, v):
        import warnings
        dt = self.p["dtype"]
        wb = (self.bn.weight, self.bn.bias) if self.aff else ()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gx, gdy, gwb = self.second(self.bn, self.state, _arr(x, dt), _arr(dy, dt), _arr(v, dt), self.traced_hyper,
                                       wb)
        out = {"ddx": _np(gx)[0], "ddy": _np(gdy)[0]}
        if self.aff:
            out["ddweight"] = _np(gwb[0])[0].reshape(-1)
        return out

    def running_stats(self):
        """What eval normalizes with: the EMA state ("ema"), or the hidden averages divided by
        1 - momentum^count ("batch", equinox's zero-debiasing)."""
        if self.mode == "ema":
            mean, var = self.state.get(self.bn.ema_state_index)
            return _np(mean)[0].reshape(-1), _np(var)[0].reshape(-1)
        hm, hv = self.state.get(self.bn.batch_state_index)
        count = int(np.asarray(self.state.get(self.bn.batch_counter)))
        scale = 1.0 if count == 0 else 1.0 - float(self.hyper["momentum"]) ** count
        return _np(hm)[0].reshape(-1) / scale, _np(hv)[0].reshape(-1) / scale

    def counter(self):
        return None


def _build(cls, *a):
    """Defined here, not taken from jax_bn: a reproducer embeds the module its build comes from."""
    return lambda params, device: _on(device, lambda: cls(params, *a))


def implementations():
    return [
        Implementation("equinox.nn.BatchNorm[mode=ema]", "flax", caps(feature_axes=("first",), second_grads=True),
                       _build(_Equinox, "ema"), versions, devices, FAMILY),
        Implementation("equinox.nn.BatchNorm[mode=batch]", "haiku", caps(feature_axes=("first",), second_grads=True),
                       _build(_Equinox, "batch"), versions, devices, FAMILY),
    ]

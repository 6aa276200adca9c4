"""A hand-written BN function on JAX arrays (`--kind jax-function`), called through its own
signature (call_templates.py); jax.vjp of the call gives dx, dgamma and dbeta, so the gradient
clauses judge the backward pass its forward implies (or its custom_vjp).

JAX arrays are immutable: running statistics come back from the call, as the last two items of
a 3-tuple or where --returns names them, e.g.
    --call "bn(x, weight, bias, running_mean, running_var, training=training, momentum=momentum, eps=eps)"
    --returns "y, running_mean, running_var"
JAX has no mode of its own to read: the template names `training`. The call runs under
jax.jit, as a training step does; XLA compiles per input shape,
so cases draw their layouts from a small per-run pool (strategies.layout_pool), as the built-in
JAX adapters do, and an audit takes seconds, not minutes.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from bnconf.adapters._protocol import Implementation, default_capabilities
from bnconf.adapters.jax_bn import LAYOUT_POOL, _arr, _jax, _np
from bnconf.adapters.numpy_protocol import CALL_TIMEOUT_S, ProtocolError, _time_limit
from bnconf.running.call_templates import (CALL_VALUES, Template, TemplateError, call_values,
                                           require_hyperparameters, returned)

DEFAULT_CALL = "{name}(x, weight, bias, running_mean, running_var, training=training, momentum=momentum, eps=eps, axis=axis)"


class _Program:
    """The user's call as JAX runs it: one per implementation, so that every case of a layout
    reuses what was compiled for it. Under jax.jit (how a JAX training step runs), with
    `training` and the feature axis static and momentum and eps traced, a program is compiled
    once per shape and mode: op by op, each op would compile per shape, about four times the
    time (measured on a 2-D flax-style function: 0.28 s against 1.2 s per new shape)."""

    def __init__(self, fn, name, tmpl: Template, returns):
        jax = _jax()
        self.fn, self.name, self.tmpl, self.returns = fn, name, tmpl, returns
        self.forward, self.step = (jax.jit(f, static_argnames=("fa", "training")) for f in (self._forward, self._step))

    def _forward(self, x, w, b, rm, rv, mom, eps, *, fa, training):
        shaped = lambda a: None if a is None else a.reshape([-1 if i == fa else 1 for i in range(x.ndim)])  # noqa: E731
        values = call_values(x, w, b, rm, rv, training, mom, eps, fa)
        return _split(self.tmpl.call(self.name, self.fn, values, shaped), self.returns, rm is not None)

    def _step(self, x, w, b, rm, rv, mom, eps, dy, *, fa, training):
        y, vjp, stats = _jax().vjp(lambda x_, w_, b_: self._forward(x_, w_, b_, rm, rv, mom, eps, fa=fa,
                                                                     training=training), x, w, b, has_aux=True)
        return y, stats, vjp(dy.astype(y.dtype))


class _JaxFunctionInstance:
    def __init__(self, program: _Program, params, timeout):
        self.prog, self.p, self.timeout = program, params, timeout
        require_hyperparameters(params, program.tmpl, "the --call template")
        c, dt = params["num_features"], params["dtype"]
        self.dt = dt
        keeps = _keeps(program.tmpl, program.returns)
        self.rm = _arr(np.zeros(c), dt) if keeps else None
        self.rv = _arr(np.ones(c), dt) if keeps else None
        w, b = ((params["weight"], params["bias"]) if params["affine"] == "random" else (np.ones(c), np.zeros(c)))
        self.w, self.b = _arr(w, dt), _arr(b, dt)
        self.hyper = tuple(None if params[k] == "default" else float(params[k]) for k in ("momentum", "eps"))

    def forward(self, x, training, dy):
        xx = _arr(x, self.dt)
        args = (xx, self.w, self.b, self.rm, self.rv, *self.hyper)
        statics = {"fa": self.p["feature_axis"], "training": training}
        with contextlib.redirect_stdout(io.StringIO()), _time_limit(self.timeout), _untraceable():
            if training:   # one program per layout for every training call: a zero dy when none is asked
                y, stats, (gx, gw, gb) = self.prog.step(*args, _arr(np.zeros_like(x) if dy is None else dy, self.dt),
                                                        **statics)
                gx = None if dy is None else gx
            else:
                (y, stats), gx = self.prog.forward(*args, **statics), None
            self._keep(stats)
            yv, name = _np(y)
        out = {"y": yv, "y_dtype": name}
        if gx is not None:
            out.update(dx=_np(gx)[0], dweight=_np(gw)[0].reshape(-1), dbias=_np(gb)[0].reshape(-1))
        return out

    def _keep(self, stats):
        if stats is None:
            return
        c = self.p["num_features"]
        for key, a in zip(("running_mean", "running_var"), stats):
            if not hasattr(a, "size") or a.size != c:
                raise ProtocolError(f"the returned {key} is {type(a).__name__}"
                                    + (f" of {a.size} elements" if hasattr(a, "size") else "")
                                    + f", expected an array of {c}")
        self.rm, self.rv = (_arr(_np(a)[0].reshape(-1), self.dt) for a in stats)

    def running_stats(self):
        if self.rm is None:
            return None
        return _np(self.rm)[0].reshape(-1).copy(), _np(self.rv)[0].reshape(-1).copy()

    def counter(self):
        return None


@contextlib.contextmanager
def _untraceable():
    """Code that cannot be traced (Python branching on a value, a NumPy call on an array) is a
    usage problem of jax.jit, said as one, not a failure of the clause being exercised."""
    import jax
    try:
        yield
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
            jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError) as exc:
        raise ProtocolError(f"the call cannot be traced by JAX ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                            "under jax.jit and jax.vjp the function must not branch on array values or convert "
                            "them to NumPy") from None


def _split(res, returns, keeps):
    """(y, the returned running statistics or None): what jax.vjp differentiates and carries."""
    got = returned(res, returns)
    y = got["y"]
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise ProtocolError(f"y is a {type(y).__name__}, not an array")
    if keeps and "running_mean" in got:
        return y, (got["running_mean"], got["running_var"])
    return y, None


def _keeps(tmpl: Template, returns) -> bool:
    return bool(returns and "running_mean" in returns) or (not returns and "running_mean" in tmpl.names)


def jax_function_implementation(fn, name, profile, call: str | None, returns, timeout=CALL_TIMEOUT_S):
    short = name.rpartition(":")[2]
    tmpl = Template(call or DEFAULT_CALL.format(name=short), short, CALL_VALUES, "--call")
    if "training" not in tmpl.names:
        raise TemplateError(f"--call {tmpl.text!r}: names no training; JAX has no mode of its own, so the "
                            "call must pass it (training=training)")
    keeps = _keeps(tmpl, returns)
    caps = default_capabilities(
        feature_axes=("first", "last") if "axis" in tmpl.names else ("first",), dtypes=("float32", "float64"),
        running_stats=keeps, explicit_momentum="momentum" in tmpl.names, default_momentum="momentum" not in tmpl.names,
        default_eps="eps" not in tmpl.names, affine_off=False, default_init=False, eval_without_stats=not keeps,
        layout_pool=LAYOUT_POOL)
    program = _Program(fn, short, tmpl, returns)
    return Implementation(name, profile, caps, lambda params, device: _JaxFunctionInstance(program, params, timeout),
                          lambda: {"jax": __import__("jax").__version__}, lambda: ["cpu"], "user")

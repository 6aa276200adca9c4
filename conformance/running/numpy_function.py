"""A hand-written BN function on NumPy arrays in its own signature (`--kind numpy-function`),
e.g. CS231n's `batchnorm_forward(x, gamma, beta, bn_param) -> (out, cache)` with its hand-written
`batchnorm_backward(dout, cache) -> (dx, dgamma, dbeta)`:

    --call "batchnorm_forward(x, weight, bias, kept(mode='train' if training else 'test', eps=eps,
                                                     momentum=momentum))"
    --returns "y, cache"  --backward "batchnorm_backward(dy, cache)"

`kept(**values)` is one dict per layer that lives across its calls, as the caller's `bn_param`
does: it starts holding running_mean (zeros) and running_var (ones), each call updates it with the
values named, and after a call the running statistics are read back from it (the function's own
`bn_param['running_mean'] = ...`). Without `kept`, running statistics come from --returns, or
from the arrays passed as running_mean/running_var, updated in place.

The backward template may name dy, x, weight, bias and any item --returns named (cache); it
returns (dx, dweight, dbias), or dx alone. There is no autograd here: without --backward the
gradient clauses are not exercised.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from bnconf.adapters._protocol import Implementation, default_capabilities
from bnconf.adapters.numpy_protocol import CALL_TIMEOUT_S, ProtocolError, _time_limit
from bnconf.running.call_templates import (BACKWARD_VALUES, CALL_VALUES, Template, TemplateError,
                                           call_values, require_hyperparameters, returned)

STAT_KEYS = {"running_mean": ("running_mean", "moving_mean"), "running_var": ("running_var", "moving_var")}


class _NumpyFunctionInstance:
    def __init__(self, fn, name, tmpl: Template, returns, backward, params, timeout):
        self.fn, self.name, self.tmpl, self.returns, self.backward = fn, name, tmpl, returns, backward
        self.p, self.timeout = params, timeout
        require_hyperparameters(params, tmpl, "the --call template")
        c, dt = params["num_features"], params["dtype"]
        self.dt = dt
        self.keeps = _keeps(tmpl, returns)
        self.rm = np.zeros(c, dt) if self.keeps else None
        self.rv = np.ones(c, dt) if self.keeps else None
        self.kept = {"running_mean": self.rm, "running_var": self.rv} if tmpl.uses("kept") else None
        if params["affine"] == "random":
            self.w, self.b = params["weight"], params["bias"]
        else:
            self.w, self.b = np.ones(c, dt), np.zeros(c, dt)

    def _shaped(self, a):
        if a is None:
            return None
        shape = [1] * self.p["rank"]
        shape[self.p["feature_axis"]] = -1
        return np.asarray(a).reshape(shape)

    def _kept(self, **values):
        self.kept.update(values)
        return self.kept

    def forward(self, x, training, dy):
        values = call_values(x, self.w, self.b, self.rm, self.rv, training, self.p["momentum"], self.p["eps"],
                             self.p["feature_axis"])
        with contextlib.redirect_stdout(io.StringIO()), _time_limit(self.timeout):
            res = self.tmpl.call(self.name, self.fn, values, self._shaped, kept=self._kept)
        got = self._read(res)
        y = _array(got["y"], "y")
        out = {"y": y if y.dtype in (np.float16, np.float32, np.float64) else y.astype(np.float64),
               "y_dtype": str(y.dtype)}
        if dy is not None and training and self.backward is not None:
            name, fn, tmpl = self.backward
            bvalues = {**got, "dy": dy, "x": x, "weight": self.w, "bias": self.b}
            with contextlib.redirect_stdout(io.StringIO()), _time_limit(self.timeout):
                grads = tmpl.call(name, fn, bvalues)
            grads = list(grads) if isinstance(grads, (tuple, list)) else [grads]
            if len(grads) not in (1, 3):
                raise ProtocolError(f"{tmpl.text} returned {len(grads)} item(s); expected (dx, dweight, dbias) or dx")
            for key, g in zip(("dx", "dweight", "dbias"), grads):
                g = _array(g, f"{key} from {tmpl.text}")
                out[key] = g.reshape(np.shape(x)) if key == "dx" and g.size == np.size(x) else (
                    g if key == "dx" else g.reshape(-1))
        return out

    def _read(self, res) -> dict:
        got = returned(res, self.returns)
        source = got if "running_mean" in got else self.kept if self.kept is not None else (
            {"running_mean": self.rm, "running_var": self.rv})
        if self.keeps:
            c = self.p["num_features"]
            for key, aliases in STAT_KEYS.items():
                found = next((source[k] for k in aliases if k in source), None)
                a = None if found is None else np.asarray(found)
                if a is None or not np.issubdtype(a.dtype, np.number) or a.size != c:
                    where = "returned" if source is got else "kept" if source is self.kept else "updated in place"
                    raise ProtocolError(f"the {where} {key} is " + ("missing" if found is None else
                                        f"{type(found).__name__} of {np.size(found)} element(s)")
                                        + f", expected {c} numbers")
                setattr(self, "rm" if key == "running_mean" else "rv", a.reshape(-1).astype(self.dt))
            if self.kept is not None:
                self.kept.update(running_mean=self.rm, running_var=self.rv)
        return got

    def running_stats(self):
        return None if self.rm is None else (self.rm.copy(), self.rv.copy())

    def counter(self):
        return None


def _array(a, what) -> np.ndarray:
    if a is None:
        raise ProtocolError(f"{what} is None")
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.number):
        raise ProtocolError(f"{what} has non-numeric dtype {arr.dtype} ({type(a).__name__})")
    return arr


def _keeps(tmpl: Template, returns) -> bool:
    return "running_mean" in tmpl.names or tmpl.uses("kept") or bool(returns and "running_mean" in returns)


def numpy_function_implementation(fn, name, profile, call: str | None, returns, backward: str | None,
                                  module, timeout=CALL_TIMEOUT_S):
    """module: where the backward template's function is looked up (the target's own file)."""
    short = name.rpartition(":")[2]
    if not call:
        raise TemplateError("--kind numpy-function needs --call (how bnconf calls your function); "
                            "a function in the bnconf signature is --kind numpy")
    tmpl = Template(call, short, CALL_VALUES, "--call", helpers=("kept",))
    if "training" not in tmpl.names:
        raise TemplateError(f"--call {call!r}: names no training; a NumPy function can only be told "
                            "its mode, e.g. kept(mode='train' if training else 'test')")
    bwd = None
    if backward:
        bname = Template.callee(backward, "--backward")
        allowed = {**BACKWARD_VALUES, **{r: "an item of --returns" for r in (returns or ()) if r != "_"}}
        btmpl = Template(backward, bname, allowed, "--backward")
        if not callable(getattr(module, bname, None)):
            raise TemplateError(f"--backward {backward!r}: {getattr(module, '__name__', 'the module')} "
                                f"has no function {bname}")
        bwd = (bname, getattr(module, bname), btmpl)
    keeps = _keeps(tmpl, returns)
    caps = default_capabilities(
        feature_axes=("first", "last") if "axis" in tmpl.names else ("first",), dtypes=("float32", "float64"),
        grads=bwd is not None, running_stats=keeps, explicit_momentum="momentum" in tmpl.names,
        default_momentum="momentum" not in tmpl.names, default_eps="eps" not in tmpl.names, affine_off=False,
        default_init=False, eval_without_stats=not keeps, empty_batch=True)
    return Implementation(name, profile, caps,
                          lambda params, device: _NumpyFunctionInstance(fn, short, tmpl, returns, bwd, params, timeout),
                          lambda: {"numpy": np.__version__}, lambda: ["cpu"], "user")

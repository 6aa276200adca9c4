"""A hand-written BN function on torch tensors (`--kind torch-function`), called through its
own signature (call_templates.py): autograd gives dx, dgamma and dbeta, so the gradient clauses
judge the backward pass the user's forward implies, or the one a custom autograd.Function
defines.

Without --call the function is called as the NumPy protocol's signature on tensors:
    NAME(x, weight, bias, running_mean, running_var, training=training, momentum=momentum, eps=eps, axis=axis)
What it returns is read by --returns, or else: a tensor is y (running statistics, if any, were
updated in place); a tuple's first item is y and, with three or more items, the next two are the
new running mean and variance.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from bnconf.adapters._protocol import Implementation, default_capabilities
from bnconf.adapters.numpy_protocol import CALL_TIMEOUT_S, ProtocolError, _time_limit
from bnconf.running.call_templates import CALL_VALUES, Template, call_values, require_hyperparameters, returned

DEFAULT_CALL = "{name}(x, weight, bias, running_mean, running_var, training=training, momentum=momentum, eps=eps, axis=axis)"


class _TorchFunctionInstance:
    def __init__(self, fn, name, tmpl: Template, returns, params, timeout):
        import torch
        self.torch, self.fn, self.name, self.tmpl, self.returns, self.p = torch, fn, name, tmpl, returns, params
        self.timeout = timeout
        require_hyperparameters(params, tmpl, "the --call template")
        dt = getattr(torch, params["dtype"])
        c = params["num_features"]
        self.dt = dt
        keeps = "running_mean" in tmpl.names or (returns and "running_mean" in returns)
        self.rm = torch.zeros(c, dtype=dt) if keeps else None
        self.rv = torch.ones(c, dtype=dt) if keeps else None
        if params["affine"] == "random":
            self.w, self.b = (torch.as_tensor(np.asarray(params[k])).to(dt) for k in ("weight", "bias"))
        else:
            self.w, self.b = torch.ones(c, dtype=dt), torch.zeros(c, dtype=dt)

    def _shaped(self, t):
        if t is None:
            return None
        shape = [1] * self.p["rank"]
        shape[self.p["feature_axis"]] = -1
        return t.reshape(shape)

    def forward(self, x, training, dy):
        torch = self.torch
        backward = dy is not None and training
        xt = torch.as_tensor(x).requires_grad_(backward)
        w, b = (t.clone().requires_grad_(backward) for t in (self.w, self.b))
        values = call_values(xt, w, b, self.rm, self.rv, training, self.p["momentum"], self.p["eps"],
                             self.p["feature_axis"])
        # a function told no mode can only read it from the gradient mode (d2l's is_grad_enabled())
        grad = contextlib.nullcontext() if "training" in self.tmpl.names else torch.set_grad_enabled(training)
        with grad, contextlib.redirect_stdout(io.StringIO()), _time_limit(self.timeout):
            res = self.tmpl.call(self.name, self.fn, values, self._shaped)
        y = self._read(res)
        out = {"y": y.detach().numpy().copy(), "y_dtype": str(y.dtype).replace("torch.", "")}
        if backward:
            if not y.requires_grad:
                raise ProtocolError("y does not depend on x through autograd (was it computed outside torch, "
                                    "or under no_grad?): no gradients to check")
            with _time_limit(self.timeout):
                (y * torch.as_tensor(dy)).sum().backward()
            for key, t in (("dx", xt), ("dweight", w), ("dbias", b)):
                if t.grad is not None:
                    out[key] = t.grad.detach().numpy().reshape(-1 if key != "dx" else t.shape).copy()
        return out

    def _read(self, res):
        torch = self.torch
        got = returned(res, self.returns)
        y = got["y"]
        if not isinstance(y, torch.Tensor):
            raise ProtocolError(f"y is a {type(y).__name__}, not a tensor")
        if self.rm is not None and "running_mean" in got:
            for key in ("running_mean", "running_var"):
                t = got.get(key)
                if not isinstance(t, torch.Tensor) or t.numel() != self.p["num_features"]:
                    raise ProtocolError(f"the returned {key} is {type(t).__name__}"
                                        + (f" of {t.numel()} elements" if isinstance(t, torch.Tensor) else "")
                                        + f", expected a tensor of {self.p['num_features']}")
            self.rm = got["running_mean"].detach().reshape(-1).to(self.dt)
            self.rv = got["running_var"].detach().reshape(-1).to(self.dt)
        return y

    def running_stats(self):
        if self.rm is None:
            return None
        return self.rm.detach().numpy().reshape(-1).copy(), self.rv.detach().numpy().reshape(-1).copy()

    def counter(self):
        return None


def torch_function_implementation(fn, name, profile, call: str | None, returns, timeout=CALL_TIMEOUT_S):
    short = name.rpartition(":")[2]
    tmpl = Template(call or DEFAULT_CALL.format(name=short), short, CALL_VALUES, "--call")
    keeps = "running_mean" in tmpl.names or bool(returns and "running_mean" in returns)
    caps = default_capabilities(
        feature_axes=("first", "last") if "axis" in tmpl.names else ("first",), dtypes=("float32", "float64"),
        running_stats=keeps, explicit_momentum="momentum" in tmpl.names, default_momentum="momentum" not in tmpl.names,
        default_eps="eps" not in tmpl.names, affine_off=False, default_init=False, eval_without_stats=not keeps)
    return Implementation(name, profile, caps,
                          lambda params, device: _TorchFunctionInstance(fn, short, tmpl, returns, params, timeout),
                          lambda: {"torch": __import__("torch").__version__}, lambda: ["cpu"], "user")

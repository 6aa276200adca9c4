"""Load an implementation from a target a user names ('file.py:NAME', 'package.module:NAME'):
a NumPy function with the bnconf protocol, a NumPy function in its own signature
(numpy_function.py), a function on torch tensors (torch_function.py) or on JAX arrays
(jax_function.py), a torch nn.Module subclass, or a Keras 3 Layer subclass (keras_layer.py).

NumPy protocol (see README, 'Audit your own BN'):

    batch_norm(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1)
        -> (y, new_running_mean, new_running_var)

The user's code runs with a per-call time limit and with its stdout captured; whatever it
does wrong (raise, return the wrong thing, mutate its inputs, hang) becomes a violation
that names the clause or protocol rule, never a traceback from bnconf.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
from pathlib import Path

from bnconf.adapters._protocol import Implementation, Unsupported, default_capabilities
from bnconf.adapters.jax_bn import _jax
from bnconf.adapters.torch_bn import grad_grad as torch_grad_grad, reload_into
from bnconf.adapters.numpy_protocol import (
    CALL_TIMEOUT_S, CallTimeout, ProtocolError, _time_limit, implementation as _numpy_protocol_implementation)
from bnconf.running.call_templates import INIT_VALUES, Template, TemplateError, parse_returns, require_hyperparameters
from bnconf.running.jax_function import jax_function_implementation
from bnconf.running.keras_layer import _keras, keras_layer_implementation
from bnconf.running.numpy_function import numpy_function_implementation
from bnconf.running.torch_function import torch_function_implementation


class TargetError(Exception):
    """The target cannot be loaded (usage error, exit status 2)."""


def load_target(target: str):
    """'path/to/file.py:NAME' or 'package.module:NAME'."""
    if ":" not in target:
        raise TargetError(f"target {target!r} must be 'path/to/file.py:NAME' or 'package.module:NAME'")
    mod_part, _, name = target.rpartition(":")
    if not name.isidentifier():
        raise TargetError(f"{name!r} in target {target!r} is not a Python name")
    try:
        if mod_part.endswith(".py") or "/" in mod_part or "\\" in mod_part:
            path = Path(mod_part)
            if not path.is_file():
                raise TargetError(f"file {path} not found (target {target!r})")
            spec = importlib.util.spec_from_file_location(f"bnconf_user_{abs(hash(str(path.resolve())))}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            with contextlib.redirect_stdout(io.StringIO()):
                spec.loader.exec_module(module)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                module = importlib.import_module(mod_part)
    except TargetError:
        raise
    except SyntaxError as exc:
        raise TargetError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        raise TargetError(f"importing {mod_part!r} failed: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, name):
        raise TargetError(f"{mod_part!r} has no attribute {name!r}")
    return getattr(module, name)


def numpy_implementation(fn, name, profile, timeout=CALL_TIMEOUT_S) -> Implementation:
    return _numpy_protocol_implementation(fn, name, profile, timeout)


class _TorchModuleInstance:
    """A module constructed as NAME(num_features) or by an --init template, switched with
    .train()/.eval() (and, for modules that read torch.is_grad_enabled(), run under no_grad in eval)."""

    def __init__(self, cls, params, timeout, init=None):
        import torch
        self.torch, self.p, self.timeout, self.cls, self.init = torch, params, timeout, cls, init
        require_hyperparameters(params, init, init.text if init else "NAME(num_features)")
        self.m = self._build()
        self._w, self._b = self._affine()
        if params["affine"] == "random":
            with torch.no_grad():
                self._w.copy_(torch.as_tensor(params["weight"]).reshape(self._w.shape))
                self._b.copy_(torch.as_tensor(params["bias"]).reshape(self._b.shape))

    def _build(self):
        how = self.init.text if self.init else "NAME(num_features)"
        values = {"num_features": self.p["num_features"], "momentum": self.p["momentum"], "eps": self.p["eps"],
                  "rank": self.p["rank"]}
        try:
            with contextlib.redirect_stdout(io.StringIO()), _time_limit(self.timeout):
                m = self.init.call(self.cls.__name__, self.cls, values) if self.init else self.cls(self.p["num_features"])
        except (Unsupported, CallTimeout):
            raise
        except NotImplementedError:   # outside the module's scope (running/scope.py)
            raise
        except Exception as exc:
            raise ProtocolError(f"{how} raised {type(exc).__name__}: {exc}") from None
        if not isinstance(m, self.torch.nn.Module):
            raise ProtocolError(f"{how} returned {type(m).__name__}, not a torch.nn.Module")
        return m.to(getattr(self.torch, self.p["dtype"]))

    def reload(self):
        """BN-STATE-PERSIST: torch.save(state_dict()) and load_state_dict into a fresh NAME(num_features)."""
        fresh = self._build()
        with _time_limit(self.timeout):
            self.m = reload_into(self.m, fresh)
        self._w, self._b = self._affine()

    def to_float64(self):
        self.m = self.m.to(self.torch.float64)
        mean, _ = self._buffers()
        return {"param_dtype": str(self._affine()[0].dtype).replace("torch.", ""),
                "stats_dtype": "none" if mean is None else str(mean.dtype).replace("torch.", "")}

    def initial_affine(self):
        """gamma and beta as the module was built (BN-INIT; running/trace.py)."""
        return tuple(t.detach().numpy().reshape(-1).copy() for t in self._affine())

    def _affine(self):
        named = dict(self.m.named_parameters())
        w = next((named[k] for k in ("weight", "gamma", "scale") if k in named), None)
        b = next((named[k] for k in ("bias", "beta", "offset") if k in named), None)
        if w is None or b is None:
            raise Unsupported(f"no scale/shift parameters found among {sorted(named)}")
        return w, b

    def _buffers(self):
        d = dict(self.m.named_buffers())
        d.update({k: v for k, v in vars(self.m).items() if isinstance(v, self.torch.Tensor)})
        mean = next((d[k] for k in ("running_mean", "moving_mean") if k in d), None)
        var = next((d[k] for k in ("running_var", "moving_var", "running_std") if k in d), None)
        return mean, var

    def forward(self, x, training, dy):
        torch = self.torch
        xt = torch.as_tensor(x)
        self.m.train(training)
        ctx = contextlib.nullcontext() if training else torch.no_grad()
        for p in self.m.parameters():
            p.grad = None
        xt.requires_grad_(dy is not None and training)
        with ctx, contextlib.redirect_stdout(io.StringIO()), _time_limit(self.timeout):
            y = self.m(xt)
        if not isinstance(y, torch.Tensor):
            raise ProtocolError(f"forward returned {type(y).__name__}, not a tensor")
        out = {"y": y.detach().numpy().copy(), "y_dtype": str(y.dtype).replace("torch.", "")}
        if dy is not None and training:
            (y * torch.as_tensor(dy)).sum().backward()
            out["dx"] = xt.grad.numpy().copy()
            if self._w.requires_grad:   # frozen (BN-FREEZE): no parameter gradients
                out["dweight"] = self._w.grad.detach().numpy().reshape(-1).copy()
                out["dbias"] = self._b.grad.detach().numpy().reshape(-1).copy()
        return out

    def forward_under(self, x, training, grad_enabled):
        """BN-MODE-SWITCH: the module switched by .train()/.eval() alone, the grad mode set around it."""
        torch = self.torch
        self.m.train(training)
        with torch.set_grad_enabled(grad_enabled), contextlib.redirect_stdout(io.StringIO()), \
                _time_limit(self.timeout):
            y = self.m(torch.as_tensor(x))
        if not isinstance(y, torch.Tensor):
            raise ProtocolError(f"forward returned {type(y).__name__}, not a tensor")
        return {"y": y.detach().numpy().copy()}

    def grad_grad(self, x, dy, v):
        """BN-GRAD-GRAD: the module's training gradient differentiated once more (a hand-written
        backward that treats the statistics as constants is first-order right, second-order wrong)."""
        self.m.train(True)
        with contextlib.redirect_stdout(io.StringIO()), _time_limit(self.timeout):
            out = torch_grad_grad(self.m, x, dy, v, self._w, self.p["dtype"], "cpu")
        # a hand-written layer may hold gamma shaped (1, C) or (1, C, 1, 1): its derivative is per feature
        if "ddweight" in out:
            out["ddweight"] = out["ddweight"].reshape(-1)
        return out

    def freeze(self):
        """BN-FREEZE, the torch way: the parameters stop requiring gradients."""
        self.m.requires_grad_(False)

    def reset_stats(self):
        with _time_limit(self.timeout):
            self.m.reset_running_stats()

    def running_stats(self):
        m, v = self._buffers()
        if m is None or v is None:
            return None
        return m.detach().numpy().reshape(-1).copy(), v.detach().numpy().reshape(-1).copy()

    def counter(self):
        return None


def torch_module_implementation(cls, name, profile, timeout=CALL_TIMEOUT_S, init=None) -> Implementation:
    init = Template(init, cls.__name__, INIT_VALUES, "--init") if init else None
    named = init.names if init else set()
    # a module built as NAME(num_features) cannot be told its feature axis: torch's channels-first
    # layouts are its candidates, each audited unless the module refuses it (running/scope.py)
    caps = default_capabilities(ranks=(2, 3, 4, 5), feature_axes=("first",), dtypes=("float32", "float64"),
                                explicit_momentum="momentum" in named, default_eps="eps" not in named,
                                default_momentum="momentum" not in named, affine_off=False,
                                default_init=True, ambient_grad_mode=True, saved_state=True, second_grads=True,
                                freeze=True, reset_stats=callable(getattr(cls, "reset_running_stats", None)))
    return Implementation(name, profile, caps, lambda params, device: _TorchModuleInstance(cls, params, timeout, init),
                          lambda: {"torch": __import__("torch").__version__}, lambda: ["cpu"], "user")


KINDS = ("numpy", "numpy-function", "torch-function", "torch-module", "jax-function", "keras-layer")
_FUNCTIONS = ("numpy-function", "torch-function", "jax-function")
_TEMPLATE_KINDS = {"call": _FUNCTIONS, "returns": _FUNCTIONS,
                   "init": ("torch-module", "keras-layer"), "backward": ("numpy-function",)}


def load_implementation(target, profile, kind="numpy", timeout=CALL_TIMEOUT_S, call=None, init=None, returns=None,
                        backward=None):
    """The user's target in this process: what the isolated process runs. Callers that want
    the user's code beside their own pass `impl=` to audit() (e.g. numpy_implementation(fn)).
    call / init / returns / backward: the templates of call_templates.py."""
    for option, value in (("call", call), ("init", init), ("returns", returns), ("backward", backward)):
        if value and kind not in _TEMPLATE_KINDS[option]:
            raise TargetError(f"--{option} is for --kind {' or '.join(_TEMPLATE_KINDS[option])}, not {kind}")
    if kind not in KINDS:
        raise TargetError(f"unknown --kind {kind!r}; use " + ", ".join(KINDS))
    if kind == "jax-function":
        try:
            _jax()   # float64 needs jax_enable_x64 before the user's module makes its first array
        except ImportError:
            raise TargetError("--kind jax-function needs jax installed") from None
    if kind == "keras-layer":
        try:
            keras = _keras()
        except ImportError:
            raise TargetError("--kind keras-layer needs keras installed") from None
    obj = load_target(target)
    try:
        if kind == "keras-layer":
            if not (isinstance(obj, type) and issubclass(obj, keras.layers.Layer)):
                raise TargetError(f"{target!r} is not a keras.layers.Layer subclass")
            return keras_layer_implementation(obj, target, profile, timeout, init)
        if kind != "torch-module":   # the rest are functions
            if not callable(obj):
                raise TargetError(f"{target!r} is not callable")
            if isinstance(obj, type):
                raise TargetError(f"{target!r} is a class, not a function (--kind {kind}; a module or layer "
                                  "is --kind torch-module or keras-layer)")
        if kind == "jax-function":
            return jax_function_implementation(obj, target, profile, call, parse_returns(returns), timeout)
        if kind == "numpy":
            return numpy_implementation(obj, target, profile, timeout)
        if kind == "numpy-function":
            return numpy_function_implementation(obj, target, profile, call, parse_returns(returns), backward,
                                                 sys.modules.get(getattr(obj, "__module__", "")), timeout)
        if kind in ("torch-module", "torch-function"):
            try:
                import torch
            except ImportError:
                raise TargetError(f"--kind {kind} needs torch installed") from None
            if kind == "torch-function":
                return torch_function_implementation(obj, target, profile, call, parse_returns(returns), timeout)
            if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
                raise TargetError(f"{target!r} is not a torch.nn.Module subclass")
            return torch_module_implementation(obj, target, profile, timeout, init)
    except TemplateError as exc:
        raise TargetError(str(exc)) from None
    raise AssertionError(kind)   # KINDS is checked above

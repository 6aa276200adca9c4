"""Audit a hand-written BN: a NumPy function with the bnconf protocol, or a torch nn.Module.

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
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .adapters._protocol import Implementation, Unsupported, default_capabilities

CALL_TIMEOUT_S = 20.0


class TargetError(Exception):
    """The target cannot be loaded (usage error, exit status 2)."""


class ProtocolError(Exception):
    """The function broke the calling protocol (wrong return type, shape, ...)."""


class CallTimeout(Exception):
    pass


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


@contextlib.contextmanager
def _time_limit(seconds):
    """SIGALRM-based limit for a user call (main thread only; elsewhere no limit applies)."""
    if seconds is None or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise CallTimeout(f"the call did not return within {seconds:g} s")
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class _NumpyInstance:
    def __init__(self, fn, params, timeout):
        self.fn, self.p, self.timeout = fn, params, timeout
        c = params["num_features"]
        dt = params["dtype"]
        if params["momentum"] in ("default", None) or params["eps"] == "default":
            raise Unsupported("the protocol passes momentum and eps explicitly")
        self.rm = np.zeros(c, dt) if params["track_running_stats"] else None
        self.rv = np.ones(c, dt) if params["track_running_stats"] else None
        self.w = params["weight"] if params["affine"] == "random" else (
            np.ones(c, dt) if params["affine"] == "default" else None)
        self.b = params["bias"] if params["affine"] == "random" else (
            np.zeros(c, dt) if params["affine"] == "default" else None)
        self.stdout = io.StringIO()

    def forward(self, x, training, dy):
        before = [None if a is None else a.copy() for a in (self.rm, self.rv)]
        with contextlib.redirect_stdout(self.stdout), _time_limit(self.timeout):
            res = self.fn(x, self.w, self.b, self.rm, self.rv, training=training,
                          momentum=float(self.p["momentum"]), eps=float(self.p["eps"]), axis=self.p["feature_axis"])
        mutated = any(b is not None and not np.array_equal(b, a, equal_nan=True)
                      for b, a in zip(before, (self.rm, self.rv)))
        if not isinstance(res, (tuple, list)) or len(res) != 3:
            raise ProtocolError(f"must return (y, new_running_mean, new_running_var); returned "
                                f"{type(res).__name__}" + (f" of length {len(res)}" if isinstance(res, (tuple, list)) else ""))
        y, nm, nv = res
        if y is None:
            raise ProtocolError("returned None for y")
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.number):
            raise ProtocolError(f"y has non-numeric dtype {y.dtype}")
        if self.rm is not None:
            if nm is None or nv is None:
                raise ProtocolError("returned None running statistics although running statistics were passed")
            nm, nv = np.asarray(nm, np.float64).reshape(-1), np.asarray(nv, np.float64).reshape(-1)
            if nm.shape != before[0].shape or nv.shape != before[1].shape:
                raise ProtocolError(f"running statistics of shape {nm.shape}/{nv.shape}, expected {before[0].shape}")
            if training:
                self.rm, self.rv = nm.astype(self.rm.dtype), nv.astype(self.rv.dtype)
            else:  # eval must not change them; keep what came back so BN-EVAL-NO-UPDATE sees it
                self.rm, self.rv = nm.astype(self.rm.dtype), nv.astype(self.rv.dtype)
        return {"y": y.astype(np.float64) if y.dtype not in (np.float16, np.float32, np.float64) else y,
                "y_dtype": str(y.dtype), "mutated": mutated}

    def running_stats(self):
        return None if self.rm is None else (self.rm.copy(), self.rv.copy())

    def counter(self):
        return None


def numpy_implementation(fn, name, profile, timeout=CALL_TIMEOUT_S) -> Implementation:
    caps = default_capabilities(dtypes=("float32", "float64"), grads=False, default_eps=False,
                                default_momentum=False, default_init=False, no_running_stats=True)
    return Implementation(name, profile, caps, lambda params, device: _NumpyInstance(fn, params, timeout),
                          lambda: {"numpy": np.__version__}, lambda: ["cpu"], "user")


class _TorchModuleInstance:
    """A module constructed as NAME(num_features), switched with .train()/.eval() (and, for
    modules that read torch.is_grad_enabled(), run under no_grad in eval)."""

    def __init__(self, cls, params, timeout):
        import torch
        self.torch, self.p, self.timeout = torch, params, timeout
        if params["momentum"] != "default" or params["eps"] != "default":
            raise Unsupported("a module built as NAME(num_features) keeps its own momentum and eps")
        try:
            with contextlib.redirect_stdout(io.StringIO()), _time_limit(timeout):
                self.m = cls(params["num_features"])
        except (Unsupported, CallTimeout):
            raise
        except Exception as exc:
            raise ProtocolError(f"NAME(num_features) raised {type(exc).__name__}: {exc}") from None
        self.m = self.m.to(getattr(torch, params["dtype"]))
        self._w, self._b = self._affine()
        if params["affine"] == "random":
            with torch.no_grad():
                self._w.copy_(torch.as_tensor(params["weight"]).reshape(self._w.shape))
                self._b.copy_(torch.as_tensor(params["bias"]).reshape(self._b.shape))

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
            out["dweight"] = self._w.grad.detach().numpy().reshape(-1).copy()
            out["dbias"] = self._b.grad.detach().numpy().reshape(-1).copy()
        return out

    def running_stats(self):
        m, v = self._buffers()
        if m is None or v is None:
            return None
        return m.detach().numpy().reshape(-1).copy(), v.detach().numpy().reshape(-1).copy()

    def counter(self):
        return None


def torch_module_implementation(cls, name, profile, timeout=CALL_TIMEOUT_S) -> Implementation:
    caps = default_capabilities(ranks=(2, 4), feature_axes=("first",), dtypes=("float32", "float64"),
                                explicit_momentum=False, default_eps=True, default_momentum=True, affine_off=False,
                                default_init=True)
    return Implementation(name, profile, caps, lambda params, device: _TorchModuleInstance(cls, params, timeout),
                          lambda: {"torch": __import__("torch").__version__}, lambda: ["cpu"], "user")


@dataclass
class AuditReport:
    target: str
    profile: str
    verdict: str
    violations: list = field(default_factory=list)
    passed: list = field(default_factory=list)
    not_exercised: list = field(default_factory=list)
    fingerprint: dict = field(default_factory=dict)
    cases: int = 0
    seconds: float = 0.0
    stdout: str = ""

    def to_json(self) -> dict:
        return {"target": self.target, "profile": self.profile, "verdict": self.verdict,
                "violations": self.violations, "passed": self.passed, "not_exercised": self.not_exercised,
                "fingerprint": self.fingerprint, "cases": self.cases, "seconds": round(self.seconds, 3)}


def make_implementation(target, profile, kind="numpy", timeout=CALL_TIMEOUT_S):
    obj = load_target(target)
    if kind == "numpy":
        if not callable(obj):
            raise TargetError(f"{target!r} is not callable")
        return numpy_implementation(obj, target, profile, timeout)
    if kind == "torch-module":
        try:
            import torch
        except ImportError:
            raise TargetError("--kind torch-module needs torch installed") from None
        if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
            raise TargetError(f"{target!r} is not a torch.nn.Module subclass")
        return torch_module_implementation(obj, target, profile, timeout)
    raise TargetError(f"unknown --kind {kind!r}; use numpy or torch-module")


def audit(target, profile, *, kind="numpy", max_examples=60, seed=0, spec_path=None, repro_dir=None,
          shrink_budget=25, fingerprint=True, timeout=CALL_TIMEOUT_S, impl=None) -> AuditReport:
    """Run the shared cases for every clause that applies; returns an AuditReport."""
    import time

    from . import repro
    from .engine import REQUIRES, audit_implementation, capability_ok, run_case
    from .fingerprint import fingerprint as measure
    from .spec_loader import get_spec

    spec = get_spec(spec_path)
    prof = spec.profile(profile)
    impl = impl or make_implementation(target, profile, kind, timeout)
    t0 = time.perf_counter()
    result = audit_implementation(impl, "cpu", spec, prof, max_examples=max_examples, seed=seed,
                                  shrink_budget=shrink_budget)
    rep = AuditReport(target, profile, "conforms", cases=result.cases)
    by_clause: dict = {}
    for (cid, dtype), t in result.tallies.items():
        by_clause.setdefault(cid, []).append((dtype, t))
    for clause in spec.clauses_for(prof):
        if clause.planned:
            continue
        need = REQUIRES.get(clause.id)
        if need and not capability_ok(impl.capabilities, need):
            rep.not_exercised.append({"clause": clause.id, "reason": f"the protocol has no {need!r}"})
            continue
        tallies = by_clause.get(clause.id, [])
        failing = [(d, t) for d, t in tallies if t.failed]
        if failing:
            dtype, t = min(failing, key=lambda dt: dt[1].failing_case.n_per_channel * dt[1].failing_case.num_features)
            case, outcome = result.shrunk.get((clause.id, dtype)) or (t.failing_case, t.failing)
            if outcome is None:
                case, outcome = t.failing_case, t.failing
            msg = outcome.note or ""
            if outcome.comparison is not None:
                msg = (msg + "; " if msg else "") + outcome.comparison.describe()
            v = {"clause": clause.id, "title": clause.title, "message": msg, "example": case.to_json(),
                 "failed_cases": sum(tt.failed for _, tt in failing), "cases": sum(tt.cases for _, tt in tallies)}
            if repro_dir:
                try:
                    v["reproducer"] = repro.write(Path(repro_dir), impl, "cpu", clause, case, outcome, run_case)
                except Exception as exc:
                    v["reproducer"] = f"(not written: {exc})"
            rep.violations.append(v)
        elif tallies:
            rep.passed.append({"clause": clause.id, "cases": sum(t.cases for _, t in tallies)})
        else:
            rep.not_exercised.append({"clause": clause.id, "reason": f"no case of {result.cases} exercised it"})
    rep.verdict = "violates" if rep.violations else "conforms"
    if fingerprint:
        try:
            rep.fingerprint = measure(impl, default_momentum=False, default_eps=False)
        except Exception as exc:
            rep.fingerprint = {"error": f"{type(exc).__name__}: {exc}"}
        rep.fingerprint.setdefault("default_momentum", None)
        rep.fingerprint.setdefault("default_eps", None)
        if kind == "numpy":
            rep.fingerprint["default_momentum"] = rep.fingerprint["default_eps"] = None
    rep.seconds = time.perf_counter() - t0
    return rep

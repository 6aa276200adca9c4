"""The bnconf NumPy protocol for hand-written BN functions, as an adapter:

    batch_norm(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1)
        -> (y, new_running_mean, new_running_var)

NumPy only and no bnconf import: a reproducer embeds this file and loads the user's
function by path. The user's code runs under a per-call time limit with stdout captured.
"""
import contextlib
import io
import os
import signal
import threading

import numpy as np

from ._protocol import Implementation, Unsupported, default_capabilities


def _call_timeout_s(default=20.0) -> float:
    """BNCONF_CALL_TIMEOUT_S: the per-call limit on the user's code, for a CI that wants a hang
    reported sooner than 20 s (a hang is reported as a violation of the clause it stalled)."""
    try:
        value = float(os.environ.get("BNCONF_CALL_TIMEOUT_S") or default)
    except ValueError:
        return default
    return value if value > 0 else default


CALL_TIMEOUT_S = _call_timeout_s()


class ProtocolError(Exception):
    """The function broke the calling protocol (wrong return type, shape, ...)."""


class CallTimeout(Exception):
    pass


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
            # kept in eval too: an eval call that changes them is what BN-EVAL-NO-UPDATE must see
            self.rm, self.rv = nm.astype(self.rm.dtype), nv.astype(self.rv.dtype)
        return {"y": y.astype(np.float64) if y.dtype not in (np.float16, np.float32, np.float64) else y,
                "y_dtype": str(y.dtype), "mutated": mutated}

    def running_stats(self):
        return None if self.rm is None else (self.rm.copy(), self.rv.copy())

    def counter(self):
        return None


def implementation(fn, name, profile, timeout=CALL_TIMEOUT_S):
    caps = default_capabilities(dtypes=("float32", "float64"), grads=False, default_eps=False,
                                default_momentum=False, default_init=False, no_running_stats=True)
    return Implementation(name, profile, caps, lambda params, device: _NumpyInstance(fn, params, timeout),
                          lambda: {"numpy": np.__version__}, lambda: ["cpu"], "user")


def load_by_path(target):
    """'path/to/file.py:NAME' -> the function (used by reproducers)."""
    import importlib.util
    path, _, name = target.rpartition(":")
    spec = importlib.util.spec_from_file_location("bnconf_user_target", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)


def implementations():
    return []

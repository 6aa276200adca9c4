"""An implementation's output against the oracle's under the error model's bound: the worst
element, what was allowed there, and the arrays a reproducer needs when it fails."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Comparison:
    """One measured comparison: worst error, what was allowed there, and where."""
    ok: bool
    measured: float        # |actual - expected| at the worst index
    allowed: float         # the bound at that index
    ratio: float           # measured / allowed (the worst over all elements)
    index: tuple | None
    actual: float | None
    expected: float | None
    note: str = ""
    key: str = ""                  # the trace quantity compared (e.g. "train_0/running_var")
    expected_array: object = None  # kept only on failure, for the reproducer
    allowed_array: object = None

    def to_json(self) -> dict:
        def f(v):
            if v is None:
                return None
            v = float(v)
            return v if math.isfinite(v) else repr(v)
        return {"ok": self.ok, "measured": f(self.measured), "allowed": f(self.allowed),
                "ratio": f(self.ratio), "index": list(self.index) if self.index is not None else None,
                "actual": f(self.actual), "expected": f(self.expected), "note": self.note, "key": self.key}

    def describe(self) -> str:
        where = f" at index {tuple(self.index)}" if self.index is not None else ""
        if self.note and self.measured is None:
            return self.note
        return (f"max error {self.measured:.3g}{where} (allowed {self.allowed:.3g}, "
                f"{self.ratio:.3g}x the bound); actual {self.actual!r}, expected {self.expected!r}"
                + (f"; {self.note}" if self.note else ""))


def compare(actual, expected, allowed, note: str = "", key: str = "") -> Comparison:
    """Elementwise |actual - expected| <= allowed. Non-finite values must match exactly in
    place and kind; an infinite allowance leaves its element unjudged (masked channels, a
    quotient whose denominator is within its error of 0); a shape mismatch is a failure with a
    note, never an exception."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape:
        return Comparison(False, math.inf, 0.0, math.inf, None, None, None,
                          f"shape {a.shape} != expected {e.shape}", key, e, None)
    if a.size == 0:
        return Comparison(True, 0.0, 0.0, 0.0, None, None, None, note, key)
    tol = np.broadcast_to(np.asarray(allowed, np.float64), e.shape)
    both_nan = np.isnan(a) & np.isnan(e)
    same_inf = np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.where(both_nan | same_inf, 0.0, np.abs(a - e))
        err = np.where(np.isnan(err), np.inf, err)
        ratio = np.where(err == 0, 0.0, err / np.where(tol > 0, tol, 0.0))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    ratio = np.where(np.isposinf(tol), 0.0, ratio)
    idx = np.unravel_index(int(np.argmax(ratio)), e.shape)
    r = float(ratio[idx])
    ok = r <= 1.0
    return Comparison(ok, float(err[idx]), float(tol[idx]), r, tuple(int(i) for i in idx),
                      float(a[idx]), float(e[idx]), note, key,
                      None if ok else e, None if ok else np.array(tol))

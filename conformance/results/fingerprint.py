"""Measure the conventions an implementation follows, whatever it claims.

Each probe is a small deterministic case whose outputs solve for one convention (a momentum
weight, an eps, a variance factor). Probes go through the same adapter interface as the
audit, so built-in implementations and user functions are fingerprinted alike.
"""
from __future__ import annotations

import numpy as np

from bnconf.cases.case import Case, materialize
from bnconf.cases.layouts import preferred
from bnconf.checks.relations import relation_inputs
from bnconf.reference import error_model as tolerance, oracle
from bnconf.reference.comparison import compare
from bnconf.running.audit import build_params
from bnconf.running.trace import run_trace
from bnconf.spec.loader import get_spec

KEYS = ("momentum_form", "default_momentum", "default_eps", "eps_placement", "normalize_variance",
        "running_variance", "reduction", "one_value_per_channel", "variance_algorithm")


def _layout(caps, n=8, c=3, spatial=2):
    rank, fa = preferred(caps)
    shape = [n] + [spatial] * (rank - 1)
    shape[fa] = c
    return tuple(shape), fa


def _run(impl, case, device="cpu", steps=None):
    arrays = materialize(case)
    params = build_params(case, arrays)
    with np.errstate(all="ignore"):
        return arrays, run_trace(impl, params, arrays, steps or case.steps, device, grads=False)


def _dtype(caps):
    return "float64" if "float64" in caps.dtypes else "float32"


def _stats(x, fa):
    axes = tuple(a for a in range(x.ndim) if a != fa)
    x = x.astype(np.float64)
    return x.mean(axis=axes), x.var(axis=axes), int(np.prod([x.shape[a] for a in axes]))


def probe_momentum(impl, momentum, dt, shape, fa):
    """Weight w of the batch mean in step 1 and step 2 (running_mean starts at 0)."""
    case = Case(seed=11, shape=shape, feature_axis=fa, dtype=dt, steps=2, affine="random", momentum=momentum,
                eps=1e-3, kappa=3.0, grads=False)
    arrays, t = _run(impl, case)
    if "train_1/running_mean" not in t:
        return None
    m1, v1, n = _stats(arrays["x_train_0"], fa)
    m2, _, _ = _stats(arrays["x_train_1"], fa)
    init = t.get("init/running_mean", np.zeros_like(m1))
    r1, r2 = t["train_0/running_mean"], t["train_1/running_mean"]
    with np.errstate(all="ignore"):
        w1 = np.median((r1 - init) / (m1 - init))
        w2 = np.median((r2 - r1) / (m2 - r1))
    return float(w1), float(w2), t, arrays, n


def fingerprint(impl, *, default_momentum=True, default_eps=True) -> dict:
    caps = impl.capabilities
    dt = _dtype(caps)
    shape, fa = _layout(caps)
    fp: dict = {k: None for k in KEYS}
    fp["momentum_form"] = "none"
    fp["running_variance"] = "none"
    if caps.running_stats and caps.explicit_momentum:
        pr = probe_momentum(impl, 0.3, dt, shape, fa)
        if pr is not None:
            w1, w2, t, arrays, n = pr
            if np.isclose(w1, 0.3, atol=1e-3) and np.isclose(w2, 0.3, atol=1e-3):
                fp["momentum_form"] = "batch_weight"
            elif np.isclose(w1, 0.7, atol=1e-3) and np.isclose(w2, 0.7, atol=1e-3):
                fp["momentum_form"] = "old_weight"
            elif np.isclose(w1, 1.0, atol=1e-3) and np.isclose(w2, 0.7 / (1 - 0.3 ** 2), atol=1e-3):
                fp["momentum_form"] = "debiased_ema"
            else:
                fp["momentum_form"] = "other"
            # variance factor: the batch variance that entered the running variance
            _, v1, n = _stats(arrays["x_train_0"], fa)
            init_v = t.get("init/running_var", np.ones_like(v1))
            w = {"batch_weight": 0.3, "old_weight": 0.7, "debiased_ema": 1.0}.get(fp["momentum_form"])
            if w is not None:
                with np.errstate(all="ignore"):
                    fed = (t["train_0/running_var"] - (1 - w) * init_v * (fp["momentum_form"] != "debiased_ema")) / w
                    factor = float(np.median(fed / v1))
                if np.isclose(factor, 1.0, rtol=1e-3):
                    fp["running_variance"] = "biased"
                elif np.isclose(factor, n / (n - 1), rtol=1e-3):
                    fp["running_variance"] = "unbiased"
                else:
                    fp["running_variance"] = "other"
    if caps.running_stats and caps.default_momentum and default_momentum:
        pr = probe_momentum(impl, "default", dt, shape, fa)
        if pr is not None:
            w1 = pr[0]
            form = fp["momentum_form"]
            val = w1 if form == "batch_weight" else (1 - w1) if form == "old_weight" else None
            fp["default_momentum"] = None if val is None else float(np.round(val, 6))
    fp.update(_probe_eps(impl, dt, shape, fa, default_eps and caps.default_eps))
    fp["normalize_variance"] = _probe_normalize_variance(impl, dt, fa, caps)
    fp["reduction"] = _probe_reduction(impl, dt, shape, fa)
    fp["one_value_per_channel"] = _probe_one_value(impl, dt, fa, caps)
    fp["variance_algorithm"] = _probe_variance_algorithm(impl, fa, caps)
    return fp


def _y_for(impl, case):
    arrays, t = _run(impl, case, steps=1)
    return arrays, t.get("train_0/y"), t


def _centred_and_unscaled(arrays, y, fa):
    """(x - mu, var, (y - beta)/gamma) for the probe's first batch: the probe compares in x_hat space."""
    x = arrays["x_train_0"].astype(np.float64)
    m, v, _ = _stats(x, fa)
    sh = [1] * x.ndim
    sh[fa] = -1
    g, b = arrays.get("weight"), arrays.get("bias")
    yy = np.asarray(y, np.float64)
    if b is not None:
        yy = (yy - np.asarray(b, np.float64).reshape(sh)) / np.asarray(g, np.float64).reshape(sh)
    return x - m.reshape(sh), v.reshape(sh), yy


def _probe_eps(impl, dt, shape, fa, with_default):
    """Channels with variance comparable to eps: which placement reproduces y (the oracle's own
    variants), and the default eps solved from y = (x - mu)/sqrt(var + eps)."""
    out = {"eps_placement": None, "default_eps": None}
    caps = impl.capabilities
    aff = "off" if caps.affine_off else ("default" if caps.default_init else "random")
    case = Case(seed=12, shape=shape, feature_axis=fa, dtype=dt, steps=1, affine=aff, momentum=0.1, eps=1e-2,
                kappa=1.0, log_scale=-1.0, grads=False)
    arrays, y, _ = _y_for(impl, case)
    if y is not None:
        d, v, yy = _centred_and_unscaled(arrays, y, fa)
        errs = {}
        for placement in ("inside_sqrt", "outside_sqrt", "minus_inside_sqrt", "absent"):
            with np.errstate(all="ignore"):
                errs[placement] = np.nanmax(np.abs(yy - oracle.normalize(d, 0.0, v, 1e-2, None, None, fa, placement)))
        best = min(errs, key=errs.get)
        out["eps_placement"] = best if errs[best] < 1e-3 else "other"
    if with_default:
        arrays, y, _ = _y_for(impl, case.replace(eps="default", log_scale=-1.5))
        if y is not None:
            d, v, yy = _centred_and_unscaled(arrays, y, fa)
            with np.errstate(all="ignore"):
                eps = np.nanmedian(np.where(np.abs(yy) > 1e-3, (d / yy) ** 2, np.nan) - v)
            if np.isfinite(eps):
                out["default_eps"] = float(f"{eps:.2g}") if eps > 0 else 0.0
    return out


def _probe_normalize_variance(impl, dt, fa, caps):
    rank, fa2 = preferred(caps, ranks=(2, 3, 4, 5))
    shape = [2] + [1] * (rank - 1)
    shape[fa2] = 3
    aff = "off" if caps.affine_off else ("default" if caps.default_init else "random")
    case = Case(seed=13, shape=tuple(shape), feature_axis=fa2, dtype=dt, steps=1, affine=aff, momentum=0.1,
                eps=1e-6, grads=False)
    arrays, y, _ = _y_for(impl, case)
    if y is None:
        return None
    b = arrays.get("bias")
    g = arrays.get("weight")
    yy = np.asarray(y, np.float64)
    if b is not None:
        sh = [1] * yy.ndim
        sh[fa2] = -1
        yy = (yy - np.asarray(b, np.float64).reshape(sh)) / np.asarray(g, np.float64).reshape(sh)
    mag = float(np.median(np.abs(yy)))
    if abs(mag - 1.0) < 1e-2:
        return "biased"
    if abs(mag - 1 / np.sqrt(2)) < 1e-2:
        return "unbiased"
    return "other"


def _probe_reduction(impl, dt, shape, fa):
    case = Case(seed=14, shape=shape, feature_axis=fa, dtype=dt, steps=1, affine="random", momentum=0.1,
                eps=1e-3, grads=False)
    arrays = materialize(case)
    params = build_params(case, arrays)
    _, _, xp, over = next(e for e in relation_inputs(case, arrays) if e[0] == "perm")
    with np.errstate(all="ignore"):
        t = run_trace(impl, params, arrays, 1, "cpu", grads=False, extra=[("perm", "train", xp, None)])
    if "extra/perm/y" not in t or "train_0/y" not in t:
        return None
    y0 = np.asarray(t["train_0/y"], np.float64)
    moved = np.moveaxis(y0, fa, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    perm = over["_perm"]
    exp = np.moveaxis(flat[perm].reshape(moved.shape), -1, fa)
    ok = np.allclose(t["extra/perm/y"], exp, rtol=1e-4, atol=1e-5)
    return "all_but_feature_axis" if ok else "other"


def _probe_one_value(impl, dt, fa, caps):
    rank, fa2 = preferred(caps, ranks=(2, 3, 4, 5))
    shape = [1] * rank
    shape[fa2] = 3
    case = Case(seed=15, shape=tuple(shape), feature_axis=fa2, dtype=dt, steps=1, affine="random", momentum=0.1,
                eps=1e-3, grads=False)
    arrays, t = _run(impl, case)
    err = t.get("error")
    if err and err["phase"] == "train_0" and not err["unsupported"]:
        return "raises"
    y = t.get("train_0/y")
    if y is None:
        return None
    y = np.asarray(y, np.float64)
    if not np.all(np.isfinite(y)):
        return "non_finite"
    b = np.asarray(arrays["bias"], np.float64)
    sh = [1] * y.ndim
    sh[fa2] = -1
    return "returns_beta" if np.allclose(y, np.broadcast_to(b.reshape(sh), y.shape), atol=1e-3) else "other"


def _probe_variance_algorithm(impl, fa, caps):
    """float32 at |mean|/std = 1e4: a stable algorithm stays within the model, one-pass does not."""
    if "float32" not in caps.dtypes:
        return None
    shape, fa = _layout(caps, n=8, c=4, spatial=4)
    case = Case(seed=16, shape=shape, feature_axis=fa, dtype="float32", steps=1, affine="off" if caps.affine_off else "random", momentum=0.1, eps=1e-5, kappa=1e4, grads=False)
    arrays, y, _ = _y_for(impl, case)
    if y is None:
        return None
    spec = get_spec()
    model = tolerance.model_for(spec.tolerance, "float32")
    x = arrays["x_train_0"]
    prof = spec.profile("torch")
    y_exp = oracle.train_forward(x, arrays.get("weight"), arrays.get("bias"), 1e-5, fa, prof)[0]
    bound = tolerance.y_train_bound(model, x, arrays.get("weight"), arrays.get("bias"), 1e-5, fa, 2.0 ** -24, y_exp)
    return "stable" if compare(y, y_exp, bound).ok else "one_pass"

"""The tolerance model: how far a conforming implementation may be from the float64 oracle.

Not one global rtol. Each output gets an elementwise bound derived from an error model
(WebGPU CTS style: assume a slightly adversarial but sane order of operations):

* u_c   unit roundoff of the precision the spec requires for the computation
        (BN-DTYPE-ACCUM: float32 for float16/bfloat16/float32 inputs; BN-DTYPE-F64: float64);
* u_o   unit roundoff of each output's own dtype (one final rounding);
* g(n)  error growth of a reduction over n terms: sqrt(n) for the random walk of a
        sequential sum, log2(n) for the depth of a tree reduction, +2 for the final
        division and rounding;
* kappa |mean|/std of each channel: the conditioning of the variance.

First-order error bounds (S is the safety factor from the spec):

    e_mu  = S g u_c (|mu| + sigma)                         batch mean
    e_var = S (g+2) u_c (1 + kappa) sigma^2 + e_mu^2       batch variance

The variance term is first order in kappa: what a two-pass or Welford kernel achieves.
The one-pass E[x^2]-E[x]^2 has error ~ (g+2) u_c kappa^2 sigma^2, so at kappa of about 100
and above in float32 it leaves the model: that is BN-VAR-STABLE, by construction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np

from bnconf.reference import oracle

# Validity range of the first-order model: u_c * kappa <= VALID_U_KAPPA (second-order terms
# are then below 1% of the first-order ones), kappa from 0 to that limit, n >= 2, magnitudes
# within the dtype's range (DTYPE_MAX_ABS in strategies.py). Generated cases and relation
# inputs stay inside it; beyond it a bound is not evidence either way.
VALID_U_KAPPA = 1e-2

UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -24,
                 "float64": 2.0 ** -53}


# Half the spacing of the dtype's subnormals: below the smallest normal number, rounding
# error is absolute, fl(x) = x(1 + d) + e with |e| <= ETA (Higham, Accuracy and Stability, 2.2).
ETA = {2.0 ** -11: 2.0 ** -25, 2.0 ** -8: 2.0 ** -134, 2.0 ** -24: 2.0 ** -150, 2.0 ** -53: 2.0 ** -1075}


def rounding(u_out: float, v):
    """One rounding of |v| to a dtype with unit roundoff u_out, subnormals included."""
    return u_out * v + ETA.get(u_out, 0.0)


def unit_roundoff(dtype: str) -> float:
    try:
        return UNIT_ROUNDOFF[str(dtype)]
    except KeyError:
        raise ValueError(f"no unit roundoff for dtype {dtype!r}; known: {sorted(UNIT_ROUNDOFF)}") from None


# round to nearest sends |v| >= max + ulp(max)/2 to inf
OVERFLOW_AT = {"float16": 65520.0, "bfloat16": 3.3961775292304797e38, "float32": 3.4028235677973366e38,
               "float64": float("inf")}


def in_dtype_range(expected, dtype: str):
    """The exact result as the output dtype must represent it: a value past the overflow
    threshold is +-inf there (IEEE 754 round to nearest), so an output that overflows where the
    exact value does is correct, not a deviation."""
    e = np.asarray(expected, np.float64)
    limit = OVERFLOW_AT.get(str(dtype), float("inf"))
    if not np.isfinite(limit):
        return e
    return np.where(np.abs(e) >= limit, np.copysign(np.inf, e), e)


def required_compute_dtype(input_dtype: str) -> str:
    """BN-DTYPE-ACCUM / BN-DTYPE-F64: the least precision the spec allows for statistics."""
    return "float64" if input_dtype == "float64" else "float32"


@dataclass(frozen=True)
class Model:
    u_c: float
    safety: float
    summation_sqrt: float
    summation_log: float

    def growth(self, n: int) -> float:
        n = max(int(n), 1)
        return self.summation_sqrt * math.sqrt(n) + self.summation_log * math.log2(n) + 2.0

    def with_compute(self, dtype: str) -> "Model":
        """The same model at another compute precision (attribution of dtype clauses)."""
        return Model(unit_roundoff(dtype), self.safety, self.summation_sqrt, self.summation_log)


def model_for(tol: dict, input_dtype: str) -> Model:
    return Model(unit_roundoff(required_compute_dtype(input_dtype)), float(tol["safety"]),
                 float(tol["summation_sqrt"]), float(tol["summation_log"]))


def stats_error(model: Model, mean: np.ndarray, var: np.ndarray, n: int):
    """(e_mu, e_var): allowed absolute error of the batch mean and biased batch variance. The
    random-walk growth g(n) assumes rounding errors that do not all have one sign; in a channel of
    identical values (a constant channel) every partial sum rounds the same way, so its mean's
    error grows as n there (the worst case of a sequential sum)."""
    sigma = np.sqrt(var)
    g = np.where(sigma > 0, model.growth(n), max(int(n), 1) + 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(sigma > 0, np.abs(mean) / np.where(sigma > 0, sigma, 1.0), 0.0)
    e_mu = model.safety * g * model.u_c * (np.abs(mean) + sigma)
    e_var = model.safety * (g + 2) * model.u_c * (1 + kappa) * var + e_mu ** 2
    return e_mu, e_var


def xhat_error(model: Model, x, mean, var, eps, e_mu, e_var, placement="inside_sqrt"):
    """Allowed error of x_hat = (x - mu)/sqrt(var + eps), elementwise. Under the placements
    tried for attribution (eps outside the sqrt, minus eps, no eps) the same model is applied to
    that denominator: near var = 0 it is tiny, and the mean's rounding error is amplified by
    1/denominator, which the bound must carry for a rejudged case to be judged fairly."""
    centring = e_mu + model.safety * model.u_c * (np.abs(x) + np.abs(mean))
    if placement == "inside_sqrt":
        s2 = var + eps
        s = np.sqrt(s2)
        x_hat = (np.asarray(x, np.float64) - mean) / s
        return centring / s + np.abs(x_hat) * e_var / (2 * s2) + model.safety * model.u_c * np.abs(x_hat)
    d, e_root = _denominator(model, var, eps, e_var, placement)
    with np.errstate(all="ignore"):
        x_hat = (np.asarray(x, np.float64) - mean) / d
        bound = centring / d + np.abs(x_hat) * e_root / d + model.safety * model.u_c * np.abs(x_hat)
        return np.where(d > e_root, bound, np.inf)   # within its error of 0 (or negative): undetermined


def _denominator(model: Model, var, eps, e_var, placement):
    """(denominator, its allowed error) of x_hat under an attribution placement. The radicand
    also carries the rounding of var -/+ eps in the compute precision (eps itself is rounded
    there): under minus_inside_sqrt that cancels, and the error is amplified by var/(var - eps)."""
    radicand = {"outside_sqrt": var, "absent": var, "minus_inside_sqrt": var - eps}[placement]
    e_r = e_var + model.safety * model.u_c * (np.abs(var) + eps)
    with np.errstate(all="ignore"):
        root = np.sqrt(radicand)
        # |sqrt(r + e) - sqrt(r)| <= min(e / sqrt(r), sqrt(e)): sqrt is 1/2-Hoelder at r = 0
        e_root = np.minimum(e_r / np.where(root > 0, root, np.inf), np.sqrt(e_r))
    return (root + eps if placement == "outside_sqrt" else root), e_root


def _gb(weight, bias, ndim, feature_axis):
    g = np.ones(1) if weight is None else np.abs(oracle._per_feature(weight, ndim, feature_axis))
    b = np.zeros(1) if bias is None else np.abs(oracle._per_feature(bias, ndim, feature_axis))
    return g, b


def y_train_bound(model, x, weight, bias, eps, feature_axis, u_out, y_expected, placement="inside_sqrt",
                  reduction="all_but_feature_axis", rows=None):
    """Allowed |y - y_oracle| in training (BN-MEAN, BN-VAR-BIASED, BN-EPS-INSIDE, BN-AFFINE);
    `placement` and `reduction`: those of the profile the oracle was computed under (statistics
    over the batch axis alone are as ill-conditioned as each position's few values make them).
    rows: the (n, C) rows the statistics are of, when not all of x (BN-MASK, oracle.kept_rows)."""
    x = np.asarray(x, np.float64)
    if rows is None:
        mean, var, n = oracle.batch_stats(x, feature_axis, reduction)
    else:
        mean, var, n = oracle.batch_stats(rows, 1)
        mean, var = (oracle._per_feature(a, x.ndim, feature_axis) for a in (mean, var))
    e_mu, e_var = stats_error(model, mean, var, n)
    dxh = xhat_error(model, x, mean, var, eps, e_mu, e_var, placement)
    g, b = _gb(weight, bias, x.ndim, feature_axis)
    y = np.abs(y_expected)
    return g * dxh + model.safety * model.u_c * (y + b) + rounding(u_out, y)


def y_eval_bound(model, x, weight, bias, run_mean, run_var, eps, feature_axis, u_out, y_expected,
                 placement="inside_sqrt"):
    """Allowed |y - y_oracle| in eval, given the running statistics the implementation reports
    (`placement`: that of the profile the oracle was computed under)."""
    x = np.asarray(x, np.float64)
    m = oracle._per_feature(run_mean, x.ndim, feature_axis)
    v = oracle._per_feature(run_var, x.ndim, feature_axis)
    g, b = _gb(weight, bias, x.ndim, feature_axis)
    y = np.abs(y_expected)
    if placement == "inside_sqrt":
        s = np.sqrt(np.abs(v) + eps)
        return model.safety * model.u_c * (g * (np.abs(x) + np.abs(m)) / s + 2 * y + b) + rounding(u_out, y)
    d, e_root = _denominator(model, v, eps, 0.0, placement)
    with np.errstate(all="ignore"):
        x_hat = np.abs(x - m) / d
        bound = (model.safety * model.u_c * (g * (np.abs(x) + np.abs(m)) / d + 2 * y + b)
                 + g * x_hat * e_root / d + rounding(u_out, y))
        return np.where(d > e_root, bound, np.inf)   # within its error of 0 (or negative): undetermined


def running_bounds(model, batches, momentum, profile, feature_axis, initial, u_state):
    """Allowed error of the running (mean, var) after each training step.

    The update is linear with non-negative weights, so the error bound is propagated by
    running the oracle's own update on the bounds, plus one rounding of each update.
    """
    c = len(initial[0])
    zero = np.zeros(c)
    state_b = (zero, zero, zero, zero, 0)
    state_v = (np.asarray(initial[0], float), np.asarray(initial[1], float), zero, zero, 0)
    out = []
    for x in batches:
        mean, var, n = oracle.batch_stats(x, feature_axis)
        e_mu, e_var = stats_error(model, mean, var, n)
        bm, bv = mean.reshape(-1), var.reshape(-1)
        prev = state_v
        state_v = oracle.update_running(state_v, bm, bv, n, momentum, profile)
        state_b = oracle.update_running(state_b, e_mu.reshape(-1), e_var.reshape(-1), n, momentum, profile)
        u = max(model.u_c, u_state)
        rounding_m = model.safety * u * (np.abs(prev[0]) + np.abs(bm) + np.abs(state_v[0]))
        rounding_v = model.safety * u * (np.abs(prev[1]) + np.abs(bv) * 2 + np.abs(state_v[1]))
        out.append((state_b[0] + rounding_m, state_b[1] + rounding_v))
    return out


def grads_train_bound(model, x, dy, weight, eps, feature_axis, u_out, expected):
    """Allowed error of (dx, dgamma, dbeta) in training (BN-GRAD-TRAIN)."""
    x = np.asarray(x, np.float64)
    dy = np.abs(np.asarray(dy, np.float64))
    axes = oracle.reduce_axes(x.ndim, feature_axis)
    mean, var, n = oracle.batch_stats(x, feature_axis)
    e_mu, e_var = stats_error(model, mean, var, n)
    dxh = xhat_error(model, x, mean, var, eps, e_mu, e_var)
    s2 = var + eps
    x_hat = np.abs((x - mean) / np.sqrt(s2))
    g, _ = _gb(weight, None, x.ndim, feature_axis)
    gr = model.growth(n)
    S, u = model.safety, model.u_c
    m_dy = dy.mean(axis=axes, keepdims=True)
    m_dyx = (dy * x_hat).mean(axis=axes, keepdims=True)
    m_dy_dxh = (dy * dxh).mean(axis=axes, keepdims=True)
    dx_exp, dg_exp, db_exp = expected
    dx_b = (g / np.sqrt(s2) * (S * u * (dy + gr * m_dy + x_hat * gr * m_dyx) + dxh * m_dyx + x_hat * m_dy_dxh)
            + np.abs(dx_exp) * (e_var / (2 * s2) + S * u) + rounding(u_out, np.abs(dx_exp)))
    dg_b = (S * gr * u * (dy * x_hat).sum(axis=axes) + (dy * dxh).sum(axis=axes)
            + rounding(u_out, np.abs(dg_exp)))
    db_b = S * gr * u * dy.sum(axis=axes) + rounding(u_out, np.abs(db_exp))
    return dx_b, dg_b.reshape(-1), db_b.reshape(-1)


def grads_eval_bound(model, x, dy, weight, run_mean, run_var, eps, feature_axis, u_out, expected):
    """Allowed error of (dx, dgamma, dbeta) in eval (BN-GRAD-EVAL)."""
    x = np.asarray(x, np.float64)
    dy = np.abs(np.asarray(dy, np.float64))
    axes = oracle.reduce_axes(x.ndim, feature_axis)
    n = int(np.prod([x.shape[a] for a in axes]))
    m = oracle._per_feature(run_mean, x.ndim, feature_axis)
    v = oracle._per_feature(run_var, x.ndim, feature_axis)
    s = np.sqrt(np.abs(v) + eps)
    x_hat = np.abs(x - m) / s
    S, u, gr = model.safety, model.u_c, model.growth(n)
    dx_exp, dg_exp, db_exp = expected
    dx_b = S * u * 3 * np.abs(dx_exp) + rounding(u_out, np.abs(dx_exp))
    dxh = S * u * (np.abs(x) + np.abs(m)) / s + S * u * x_hat
    dg_b = S * gr * u * (dy * x_hat).sum(axis=axes) + (dy * dxh).sum(axis=axes) + rounding(u_out, np.abs(dg_exp))
    db_b = S * gr * u * dy.sum(axis=axes) + rounding(u_out, np.abs(db_exp))
    return dx_b, dg_b.reshape(-1), db_b.reshape(-1)


def grads_second_bound(model, x, dy, v, weight, eps, feature_axis, u_out, expected):
    """Allowed error of (ddx, ddgamma, ddy) of BN-GRAD-GRAD, the oracle's closed form
    (oracle.grads_second_train) propagated to first order: each sum carries g(n) roundings of
    its terms' magnitudes, b = sum dy x_hat and w = sum v x_hat also carry x_hat's own error,
    s^2 its relative error e_var/(var + eps), and each product and difference one rounding of
    its operands' magnitudes. ddy has dx's form with dy -> v, hence dx's bound."""
    x = np.asarray(x, np.float64)
    dy, v = np.asarray(dy, np.float64), np.asarray(v, np.float64)
    axes = oracle.reduce_axes(x.ndim, feature_axis)
    mean, var, n = oracle.batch_stats(x, feature_axis)
    e_mu, e_var = stats_error(model, mean, var, n)
    dxh = xhat_error(model, x, mean, var, eps, e_mu, e_var)
    s2 = 1.0 / (var + eps)
    xh = (x - mean) * np.sqrt(s2)
    g, _ = _gb(weight, None, x.ndim, feature_axis)
    S, u, gr = model.safety, model.u_c, model.growth(n)

    def total(t):
        return t.sum(axis=axes, keepdims=True)

    def err_total(t):   # the rounding of a sum of n terms
        return S * gr * u * total(np.abs(t))
    a, b, c, V, w = total(dy), total(dy * xh), total(v * dy), total(v), total(v * xh)
    e_a, e_V, e_c = err_total(dy), err_total(v), err_total(v * dy)
    e_b = err_total(dy * xh) + total(np.abs(dy) * dxh)
    e_w = err_total(v * xh) + total(np.abs(v) * dxh)
    A, B, W, Vv = np.abs(a), np.abs(b), np.abs(w), np.abs(V)
    p = c - a * V / n - b * w / n
    mag_p = np.abs(c) + A * Vv / n + B * W / n
    e_p = e_c + (e_a * Vv + A * e_V + e_b * W + B * e_w) / n + 3 * S * u * mag_p
    q, mag_q = dy - a / n - b * xh / n, np.abs(dy) + A / n + B * np.abs(xh) / n
    e_q = (e_a + e_b * np.abs(xh) + B * dxh) / n + 3 * S * u * mag_q
    r, mag_r = v - V / n - w * xh / n, np.abs(v) + Vv / n + W * np.abs(xh) / n
    e_r = (e_V + e_w * np.abs(xh) + W * dxh) / n + 3 * S * u * mag_r
    terms = np.abs(xh * p) + np.abs(w * q) + np.abs(b * r)
    e_terms = dxh * np.abs(p) + np.abs(xh) * e_p + e_w * np.abs(q) + W * e_q + e_b * np.abs(r) + B * e_r
    rel_s2 = e_var * s2 + 2 * S * u
    ddx_exp, ddg_exp, ddy_exp = expected
    ddx_b = (g * s2 / n * (e_terms + 3 * S * u * terms + rel_s2 * terms)
             + rounding(u_out, np.abs(ddx_exp)))
    s = np.sqrt(s2)
    ddg_b = s * (e_p + np.abs(p) * (rel_s2 / 2 + S * u)) + rounding(u_out, np.abs(ddg_exp).reshape(e_p.shape))
    ddy_b = grads_train_bound(model, x, v, weight, eps, feature_axis, u_out, (ddy_exp, 0.0, 0.0))[0]
    return ddx_b, ddg_b.reshape(-1), ddy_b

"""The float64 oracle against exact arithmetic and against the paper's relations."""
from decimal import Decimal, getcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

from bnconf.reference import oracle

getcontext().prec = 60


def exact_bn(x, eps, axis):
    """Algorithm 1 in exact rationals (the square root in 60-digit decimals)."""
    x = np.asarray(x)
    moved = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    out = np.empty_like(moved, dtype=float)
    means, vars_ = [], []
    for c in range(moved.shape[1]):
        col = [Fraction(float(v)) for v in moved[:, c]]
        n = len(col)
        mu = sum(col) / n
        var = sum((v - mu) ** 2 for v in col) / n
        means.append(mu)
        vars_.append(var)
        denom = (Decimal(var.numerator) / Decimal(var.denominator) + Decimal(eps)).sqrt()
        for i, v in enumerate(col):
            d = v - mu
            out[i, c] = float(Decimal(d.numerator) / Decimal(d.denominator) / denom)
    shape = list(np.moveaxis(x, axis, -1).shape)
    return np.moveaxis(out.reshape(shape), -1, axis), means, vars_


@pytest.mark.clause("BN-NORMALIZE", "BN-MEAN", "BN-VAR-BIASED", "BN-EPS-INSIDE")
@given(seed=st.integers(0, 10 ** 6), n=st.integers(2, 6), c=st.integers(1, 3), axis_last=st.booleans(),
       shift=st.sampled_from([0.0, 3.0, 1e3]))
def test_oracle_matches_exact_arithmetic(spec, seed, n, c, axis_last, shift):
    rng = np.random.default_rng(seed)
    x = shift + rng.standard_normal((n, c, 3)) if not axis_last else shift + rng.standard_normal((n, 3, c))
    axis = 2 if axis_last else 1
    eps = 1e-3
    y, mean, var, cnt = oracle.train_forward(x, None, None, eps, axis, spec.profile("torch"))
    exact, means, vars_ = exact_bn(x, eps, axis)
    u = 2.0 ** -53
    # "a few ulps" at the scale of the inputs: x - mu cancels, so an ulp of x (not of y) is the unit
    s = np.sqrt(var + eps)
    scale = (np.abs(x) + np.abs(mean)) / s + np.abs(exact)
    assert np.all(np.abs(y - exact) <= 8 * u * scale)
    assert np.all(np.abs(mean.reshape(-1) - [float(m) for m in means]) <= 8 * u * np.abs(x).max())
    ex_var = np.array([float(v) for v in vars_])
    assert np.all(np.abs(var.reshape(-1) - ex_var) <= 8 * u * (ex_var + 8 * u * np.abs(x).max() ** 2))
    assert cnt == x.size // x.shape[axis]


@pytest.mark.clause("BN-SHIFT-INVARIANCE", "BN-SCALE-INVARIANCE")
@given(seed=st.integers(0, 10 ** 6), c=st.floats(-100, 100), k=st.integers(-6, 6))
def test_oracle_shift_and_scale_invariance(spec, seed, c, k):
    x = np.random.default_rng(seed).standard_normal((5, 3, 4))
    p = spec.profile("torch")
    y = oracle.train_forward(x, None, None, 1e-3, 1, p)[0]
    ys = oracle.train_forward(x + c, None, None, 1e-3, 1, p)[0]
    a = 2.0 ** k
    ya = oracle.train_forward(x * a, None, None, 1e-3 * a * a, 1, p)[0]
    assert np.allclose(ys, y, atol=1e-11 * (1 + abs(c)))
    assert np.allclose(ya, y, atol=1e-13)


@pytest.mark.clause("BN-AXES")
def test_oracle_reduces_every_axis_but_the_feature_axis():
    assert oracle.reduce_axes(4, 1) == (0, 2, 3)
    assert oracle.reduce_axes(4, -1) == (0, 1, 2)
    assert oracle.reduce_axes(2, 1) == (0,)
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 2))
    mean, var, n = oracle.batch_stats(x, 1)
    assert n == 40 and mean.shape == (1, 3, 1, 1)
    assert np.allclose(mean.reshape(-1), x.transpose(1, 0, 2, 3).reshape(3, -1).mean(1))


@pytest.mark.clause("BN-MOMENTUM-BATCH-WEIGHT", "BN-MOMENTUM-OLD-WEIGHT", "BN-RUNVAR-UNBIASED", "BN-RUNVAR-BIASED")
def test_momentum_forms_are_mirror_images(spec):
    torch_p, keras_p = spec.profile("torch"), spec.profile("keras")
    state = (np.zeros(2), np.ones(2), np.zeros(2), np.zeros(2), 0)
    m, v, n = np.array([1.0, -2.0]), np.array([4.0, 0.5]), 5
    a = oracle.update_running(state, m, v, n, 0.1, torch_p)
    b = oracle.update_running(state, m, v, n, 0.9, keras_p)
    assert np.allclose(a[0], b[0])                       # 0.1 weights the batch == 0.9 weights the old value
    assert np.allclose(a[1], 0.9 + 0.1 * v * n / (n - 1))  # unbiased: n/(n-1)
    assert np.allclose(b[1], 0.1 * 1 + 0.9 * 0 + 0.1 * v * 0 + (0.9 * 1 + 0.1 * v) - 0.1)  # biased
    assert np.allclose(b[1], 0.9 + 0.1 * v)


@pytest.mark.clause("BN-MOMENTUM-CUMULATIVE", "BN-MOMENTUM-DEBIASED")
def test_cumulative_and_debiased_averages(spec):
    p = spec.profile("torch")
    state = (np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1), 0)
    means = [np.array([3.0]), np.array([5.0]), np.array([10.0])]
    for m in means:
        state = oracle.update_running(state, m, np.array([2.0]), 3, None, p)
    assert np.allclose(state[0], 6.0)                    # the arithmetic mean of the batch means
    h = spec.profile("haiku")
    st_ = (np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), 0)
    st_ = oracle.update_running(st_, np.array([7.0]), np.array([2.0]), 3, 0.9, h)
    assert np.allclose(st_[0], 7.0) and np.allclose(st_[1], 2.0)   # debiased: exact after one step


@pytest.mark.clause("BN-GRAD-TRAIN", "BN-GRAD-EVAL")
@given(seed=st.integers(0, 10 ** 6))
def test_gradients_match_finite_differences(seed):
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 2, 3))
    w, b, eps = rng.uniform(0.5, 2, 2), rng.standard_normal(2), 1e-2
    from bnconf.spec.loader import get_spec
    p = get_spec().profile("torch")

    def loss(xx, ww, bb):
        return float((oracle.train_forward(xx, ww, bb, eps, 1, p)[0] * dy).sum())
    dx, dw, db = oracle.grads_train(x, dy, w, eps, 1)
    h = 1e-6
    for idx in [(0, 0, 0), (3, 1, 2), (2, 0, 1)]:
        e = np.zeros_like(x)
        e[idx] = h
        assert np.isclose(dx[idx], (loss(x + e, w, b) - loss(x - e, w, b)) / (2 * h), rtol=1e-5, atol=1e-7)
    for c in range(2):
        e = np.zeros(2)
        e[c] = h
        assert np.isclose(dw[c], (loss(x, w + e, b) - loss(x, w - e, b)) / (2 * h), rtol=1e-5, atol=1e-7)
        assert np.isclose(db[c], (loss(x, w, b + e) - loss(x, w, b - e)) / (2 * h), rtol=1e-5, atol=1e-7)
    rm, rv = rng.standard_normal(2), rng.uniform(0.5, 2, 2)
    gx, _, _ = oracle.grads_eval(x, dy, w, rm, rv, eps, 1)
    assert np.allclose(gx, w.reshape(1, 2, 1) * dy / np.sqrt(rv.reshape(1, 2, 1) + eps))

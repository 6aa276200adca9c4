"""The tolerance model accepts what a careful float32 kernel achieves and rejects the
one-pass variance where its error exceeds the model (BN-VAR-STABLE)."""
import numpy as np
import pytest

from bnconf.reference import oracle

from bnconf.reference import error_model as tolerance
from bnconf.reference.comparison import compare


def two_pass(x):
    m = x.mean(axis=(0, 2), dtype=np.float32, keepdims=True)
    v = ((x - m) ** 2).mean(axis=(0, 2), dtype=np.float32, keepdims=True)
    return m, v


def welford(x):
    rows = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]).astype(np.float32)
    mean = np.zeros(x.shape[1], np.float32)
    m2 = np.zeros(x.shape[1], np.float32)
    for k, row in enumerate(rows, 1):
        d = row - mean
        mean = mean + d / np.float32(k)
        m2 = m2 + d * (row - mean)
    return mean.reshape(1, -1, 1), (m2 / np.float32(len(rows))).reshape(1, -1, 1)


def one_pass(x):
    m = x.mean(axis=(0, 2), keepdims=True, dtype=np.float32)
    return m, (x * x).mean(axis=(0, 2), keepdims=True, dtype=np.float32) - m * m


def float32_bn(stat, x, eps=1e-5):
    m, v = stat(x)
    with np.errstate(invalid="ignore"):
        return ((x - m) / np.sqrt(v + np.float32(eps))).astype(np.float32)


def worst_ratio(stat, kappa, shape, trials, spec, seed=0):
    rng = np.random.default_rng(seed)
    model = tolerance.model_for(spec.tolerance, "float32")
    worst = 0.0
    for _ in range(trials):
        std = rng.uniform(0.5, 2, shape[1])
        mean = kappa * std * rng.choice([-1, 1], shape[1])
        x = (mean.reshape(1, -1, 1) + std.reshape(1, -1, 1) * rng.standard_normal(shape)).astype(np.float32)
        y_exp = oracle.train_forward(x, None, None, 1e-5, 1, spec.profile("torch"))[0]
        bound = tolerance.y_train_bound(model, x, None, None, 1e-5, 1, 2.0 ** -24, y_exp)
        worst = max(worst, compare(float32_bn(stat, x), y_exp, bound).ratio)
    return worst


@pytest.mark.clause("BN-VAR-STABLE")
@pytest.mark.parametrize("kappa", [0.0, 1.0, 100.0, 1e4])
@pytest.mark.parametrize("stat", [two_pass, welford], ids=["two-pass", "welford"])
def test_float32_stable_kernels_are_accepted(spec, stat, kappa):
    for shape in [(8, 4, 8), (64, 4, 64)]:
        assert worst_ratio(stat, kappa, shape, 3, spec) <= 1.0


@pytest.mark.clause("BN-VAR-STABLE")
@pytest.mark.parametrize("kappa", [100.0, 300.0, 1e3, 1e4])
def test_float32_one_pass_variance_is_rejected_from_kappa_100(spec, kappa):
    for shape in [(8, 4, 8), (32, 4, 64)]:
        assert worst_ratio(one_pass, kappa, shape, 3, spec) > 1.0


@pytest.mark.clause("BN-DTYPE-F64")
def test_float64_layer_computing_in_float32_is_rejected(spec):
    x = np.random.default_rng(0).standard_normal((8, 3, 5)) + 2.0
    model = tolerance.model_for(spec.tolerance, "float64")
    y_exp = oracle.train_forward(x, None, None, 1e-5, 1, spec.profile("torch"))[0]
    y32 = float32_bn(two_pass, x.astype(np.float32)).astype(np.float64)
    bound = tolerance.y_train_bound(model, x, None, None, 1e-5, 1, 2.0 ** -53, y_exp)
    assert not compare(y32, y_exp, bound).ok
    assert compare(y_exp * (1 + 1e-15), y_exp, bound).ok


def test_comparison_reports_measured_allowed_and_where():
    c = compare(np.array([[1.0, 2.0], [3.0, 4.5]]), np.array([[1.0, 2.0], [3.0, 4.0]]), 0.1)
    assert not c.ok and c.index == (1, 1) and c.measured == pytest.approx(0.5) and c.allowed == 0.1
    assert c.ratio == pytest.approx(5.0) and "index (1, 1)" in c.describe()
    assert compare([np.nan, 1.0], [np.nan, 1.0], 0.0).ok          # NaN where NaN is expected
    assert not compare([np.nan, 1.0], [0.0, 1.0], 1.0).ok          # NaN where a value is expected
    assert not compare([np.inf], [-np.inf], 1.0).ok
    bad = compare(np.zeros((2, 3)), np.zeros((3, 2)), 1.0)
    assert not bad.ok and "shape" in bad.note


def test_bounds_grow_with_n_kappa_and_precision(spec):
    m32, m64 = tolerance.model_for(spec.tolerance, "float32"), tolerance.model_for(spec.tolerance, "float16")
    assert m32.u_c == 2.0 ** -24 and m64.u_c == 2.0 ** -24          # float16 statistics: float32 required
    assert tolerance.model_for(spec.tolerance, "float64").u_c == 2.0 ** -53
    assert m32.growth(10 ** 4) > m32.growth(100) > m32.growth(2)
    e1 = tolerance.stats_error(m32, np.array([0.0]), np.array([1.0]), 100)[1]
    e2 = tolerance.stats_error(m32, np.array([100.0]), np.array([1.0]), 100)[1]
    assert e2 > 50 * e1                                              # first order in kappa
    assert tolerance.rounding(2.0 ** -11, 0.0) == 2.0 ** -25         # float16 subnormal spacing


@pytest.mark.clause("BN-FOLD", "BN-EVAL-RUNNING")
def test_in_dtype_range_agrees_with_the_ieee_cast():
    """An exact result past a dtype's overflow threshold is +-inf in that dtype: checked against
    numpy's own round-to-nearest casts, around the thresholds and far from them."""
    rng = np.random.default_rng(0)
    for dtype, np_dtype in (("float16", np.float16), ("float32", np.float32)):
        top = float(np.finfo(np_dtype).max)
        v = np.concatenate([top * (1 + rng.uniform(-1e-3, 1e-3, 2000)), rng.normal(0, top, 200), [top, -top]])
        v = np.concatenate([v, -v])
        with np.errstate(over="ignore"):
            want = np.isinf(v.astype(np_dtype))
        got = np.isinf(tolerance.in_dtype_range(v, dtype))
        assert np.array_equal(got, want), v[got != want][:5]
    assert np.array_equal(tolerance.in_dtype_range([1e300, -1e300], "float64"), [1e300, -1e300])

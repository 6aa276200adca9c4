"""Meta-tests of the shared case strategies: they stay inside an implementation's
capabilities and they reach the corners the clauses need."""
import numpy as np
import pytest
from hypothesis import find, given, settings, strategies as st

from bnconf.adapters._protocol import default_capabilities
from bnconf.cases.case import Case, cast, channel_kappa, materialize, round_to_bfloat16
from bnconf.cases.pinned import pinned_for
from bnconf.cases.strategies import cases, fits

TORCH_LIKE = default_capabilities(ranks=(4,), feature_axes=("first",), momentum_none=True, no_running_stats=True,
                                  channels_last_memory=True)
NUMPY_LIKE = default_capabilities(dtypes=("float32", "float64"), grads=False, default_eps=False,
                                  default_momentum=False, default_init=False)


@given(case=cases(TORCH_LIKE))
def test_torch_like_cases_stay_within_capabilities(case):
    assert case.rank == 4 and case.feature_axis == 1
    assert fits(case, TORCH_LIKE)


@given(case=cases(NUMPY_LIKE))
def test_numpy_like_cases_never_ask_for_defaults(case):
    assert case.dtype in ("float32", "float64")
    assert case.eps != "default" and case.momentum not in ("default", None) and case.affine != "default"
    assert not case.grads


@pytest.mark.parametrize("what", [
    lambda c: c.n_per_channel == 1, lambda c: c.shape[0] == 0, lambda c: c.kappa >= 1e3,
    lambda c: c.special == "nan", lambda c: c.special == "constant", lambda c: c.feature_axis == c.rank - 1 > 1,
    lambda c: c.dtype == "bfloat16", lambda c: c.dtype == "float16", lambda c: c.momentum is None,
    lambda c: c.momentum == "default", lambda c: c.eps == "default", lambda c: c.affine == "off",
    lambda c: c.num_features >= 64, lambda c: c.log_scale <= -3, lambda c: c.steps == 3,
    lambda c: c.memory_format == "channels_last", lambda c: not c.track_running_stats,
], ids=["one-value", "empty", "kappa>=1e3", "nan", "constant", "channel-last", "bfloat16", "float16",
        "momentum=None", "default momentum", "default eps", "affine off", "64 channels", "tiny scale", "3 steps",
        "channels_last", "no running stats"])
def test_strategies_reach_every_corner(what):
    caps = default_capabilities(momentum_none=True, no_running_stats=True, channels_last_memory=True)
    assert find(cases(caps), what, settings=settings(max_examples=2000, database=None))


@given(case=cases(default_capabilities()))
def test_materialize_is_deterministic_and_honours_the_case(case):
    a, b = materialize(case), materialize(case)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    x = a["x_train_0"]
    assert x.shape == case.shape
    want = np.float32 if case.dtype == "bfloat16" else np.dtype(case.dtype)
    assert x.dtype == want
    if case.dtype == "bfloat16":
        np.testing.assert_array_equal(round_to_bfloat16(x), x)
    if case.affine == "random":
        assert a["weight"].shape == (case.num_features,)
    if case.special == "none" and case.n_per_channel > 50 and case.kappa >= 100 and case.dtype == "float64":
        assert channel_kappa(x, case.feature_axis).max() > case.kappa / 4


def test_bfloat16_rounding_is_round_to_nearest_even():
    x = np.array([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -9, -2.5, np.inf], np.float32)
    np.testing.assert_array_equal(round_to_bfloat16(x), [1.0, 1.0 + 4 * 2 ** -8, 1.0, -2.5, np.inf])
    assert cast(np.array([0.1]), "float16").dtype == np.float16


def test_pinned_regressions_fit_the_layouts():
    for caps in (TORCH_LIKE, NUMPY_LIKE, default_capabilities(feature_axes=("last",), ranks=(2, 4))):
        pinned = pinned_for(caps)
        assert pinned and all(fits(c, caps) for c in pinned)
    torch_pinned = pinned_for(TORCH_LIKE)
    assert any(c.kappa == 1e4 for c in torch_pinned) and any(c.n_per_channel == 1 for c in torch_pinned)
    assert Case.from_json(torch_pinned[0].to_json()) == torch_pinned[0]

"""BN-RENORM: the oracle's batch renormalization held to the paper's limits, Keras' renorm=True
held to the check, and a layer that ignores the renorm request reported under it."""
import numpy as np
import pytest

from bnconf.cases.case import Case
from bnconf.reference import oracle
from bnconf.running.audit import evaluate
from bnconf.running.registry import find


def _case(shape, fa, dtype="float32", seed=3, log_scale=0.0):
    return Case(seed=seed, shape=shape, feature_axis=fa, dtype=dtype, steps=1, affine="random", momentum=0.9,
                eps=1e-3, kappa=0.0, log_scale=log_scale, special="none", special_channel=0,
                track_running_stats=True, memory_format="contiguous", grads=True, centred=False)


@pytest.mark.clause("BN-RENORM")
def test_renorm_is_batch_norm_when_the_renorm_statistics_are_the_batch_ones_and_clipping_binds():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3)) * 2 + 1
    mean, var, _ = oracle.batch_stats(x, 1)
    mu, sigma = mean.reshape(-1), np.sqrt(var.reshape(-1) + 1e-3)
    state = (np.zeros(3), np.ones(3), mu, sigma)
    y, _, r, d = oracle.renorm_train(x, None, None, 1e-3, 1, state, 0.9, 0.9, {})
    np.testing.assert_allclose(r, 1.0) and np.testing.assert_allclose(d, 0.0, atol=1e-15)
    np.testing.assert_allclose(y, oracle.train_forward(x, None, None, 1e-3, 1, _Profile())[0], atol=1e-14)
    # rmax = 1, rmin = 1, dmax = 0: the corrections are off, whatever the renorm statistics
    y, _, r, d = oracle.renorm_train(x, None, None, 1e-3, 1, (0, 1, 0, 1), 0.9, 0.9,
                                     {"rmin": 1.0, "rmax": 1.0, "dmax": 0.0})
    np.testing.assert_allclose(y, oracle.train_forward(x, None, None, 1e-3, 1, _Profile())[0], atol=1e-14)
    # unclipped from the initial renorm statistics (0, 1): y = gamma x + beta, up to eps
    y, _, _, _ = oracle.renorm_train(x, None, None, 1e-12, 1, (0, 1, 0, 1), 0.9, 0.9, {})
    np.testing.assert_allclose(y, x, atol=1e-9)


class _Profile:
    normalize_variance, eps_placement, reduction = "biased", "inside_sqrt", "all_but_feature_axis"


@pytest.mark.clause("BN-RENORM")
@pytest.mark.parametrize("backend", ["jax"])
def test_keras_renorm_conforms_and_a_layer_that_ignores_renorm_does_not(spec, backend):
    pytest.importorskip("keras")
    from bnconf.adapters._protocol import Implementation
    impl = find(f"keras.layers.BatchNormalization[{backend}]")

    def build(params, device):   # a layer that drops the request and reports renorm statistics it never had
        inst = impl.build(dict(params, renorm=None), device)
        inst.renorm_stats = inst.running_stats
        return inst
    ignores = Implementation(impl.name + "[no renorm]", impl.profile, impl.capabilities, build,
                             impl.versions, impl.devices, impl.family)
    prof = spec.profile(impl.profile)
    applicable = {c.id for c in spec.clauses_for(prof)}
    for case in (_case((6, 3), 1), _case((3, 2, 2, 4), 3, seed=8), _case((5, 2), 1, log_scale=1.0)):
        outs = {o.clause: o for o in evaluate(impl, case, "cpu", spec, prof, applicable)[0]}
        assert outs["BN-RENORM"].ok, outs["BN-RENORM"].note
        bad = {o.clause: o for o in evaluate(ignores, case, "cpu", spec, prof, applicable)[0]}
        assert not bad["BN-RENORM"].ok and not bad["BN-RENORM"].note, bad["BN-RENORM"]   # a numeric deviation

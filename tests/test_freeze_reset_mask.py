"""BN-FREEZE, BN-RESET and BN-MASK held to real layers and to the bugs they exist for: a torch
module whose frozen parameters also freeze its statistics, a reset that also resets gamma and
beta, a Keras layer whose freeze is lost, a Flax call whose mask is dropped. Each is reported
under its clause; the real layers conform on the same cases."""
import textwrap

import numpy as np
import pytest

from bnconf.cases.case import Case
from bnconf.running.audit import evaluate
from bnconf.running.registry import find

RELEVANT = ("BN-FREEZE", "BN-RESET", "BN-MASK")

TORCH_MODULES = textwrap.dedent('''
    import torch

    class FrozenMeansEval(torch.nn.BatchNorm1d):
        """Freezing gamma and beta also stops the statistics (what Keras users expect of torch)."""
        def forward(self, x):
            if not self.weight.requires_grad:
                return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                                      self.bias, False, 0.0, self.eps)
            return super().forward(x)

    class ResetsEverything(torch.nn.BatchNorm1d):
        """reset_running_stats that also resets the learned scale and shift."""
        def reset_running_stats(self):
            super().reset_running_stats()
            with torch.no_grad():
                self.weight.fill_(1.0)
                self.bias.fill_(0.0)

    class Library(torch.nn.BatchNorm1d):
        pass
''')


def _case(shape=(6, 3), fa=1, dtype="float32", seed=5, affine="random", momentum=0.9):
    return Case(seed=seed, shape=shape, feature_axis=fa, dtype=dtype, steps=1, affine=affine, momentum=momentum,
                eps=1e-3, kappa=0.0, log_scale=0.0, special="none", special_channel=0, track_running_stats=True,
                memory_format="contiguous", grads=True, centred=False)


def _outcomes(impl, case, spec):
    prof = spec.profile(impl.profile)
    applicable = {c.id for c in spec.clauses_for(prof)}
    outs, _, _ = evaluate(impl, case, "cpu", spec, prof, applicable)
    return {o.clause: o for o in outs if o.clause in RELEVANT}


class _Wrapped:
    """A real layer's instance with one of its switches replaced: the user's bug."""
    def __init__(self, inst, **over):
        self._inst, self._over = inst, over

    def __getattr__(self, name):
        return self._over.get(name) or getattr(self._inst, name)


def _with_bug(impl, **bug):
    from bnconf.adapters._protocol import Implementation

    def build(params, device):
        inst = impl.build(params, device)
        return _Wrapped(inst, **{k: (lambda f: (lambda *a: f(inst, *a)))(f) for k, f in bug.items()})
    return Implementation(impl.name + "[bug]", impl.profile, impl.capabilities, build, impl.versions, impl.devices,
                          impl.family)


@pytest.mark.clause("BN-FREEZE", "BN-RESET")
def test_torch_freeze_and_reset_bugs_are_reported_under_their_clauses(audit_torch_module):
    pytest.importorskip("torch")
    frozen = audit_torch_module(TORCH_MODULES, "FrozenMeansEval", 0)
    v = next(v for v in frozen.violations if v["clause"] == "BN-FREEZE")
    assert "gave the inference output" in v["message"], v
    reset = audit_torch_module(TORCH_MODULES, "ResetsEverything", 0)
    v = next(v for v in reset.violations if v["clause"] == "BN-RESET")
    assert "initial statistics" in v["message"], v
    library = audit_torch_module(TORCH_MODULES, "Library", 0)
    # BatchNorm1d fed the torch-module kind's rank-4 inputs raises there (its scope, not these clauses)
    for rep, clause in ((frozen, "BN-FREEZE"), (reset, "BN-RESET"), (library, None)):
        others = [v for v in rep.violations if v["clause"] != clause]
        assert all("expected 2D or 3D input" in v["message"] for v in others), others
    assert {"BN-FREEZE", "BN-RESET"} <= {p["clause"] for p in library.passed}


@pytest.mark.clause("BN-FREEZE", "BN-RESET")
@pytest.mark.parametrize("name", ["torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d"])
def test_torch_layers_conform_to_freeze_and_reset(spec, name):
    pytest.importorskip("torch")
    impl = find(name)
    shape = (6, 3) if name.endswith("1d") else (3, 2, 2, 2)
    for dtype in ("float32", "float64"):
        outs = _outcomes(impl, _case(shape, dtype=dtype), spec)
        assert outs["BN-FREEZE"].ok and outs["BN-RESET"].ok, {k: o.note for k, o in outs.items()}


@pytest.mark.clause("BN-FREEZE")
def test_a_keras_layer_whose_freeze_is_lost_keeps_training_and_says_so(spec):
    pytest.importorskip("keras")
    impl = find("keras.layers.BatchNormalization[jax]")
    case = _case((5, 4), fa=1)
    assert _outcomes(impl, case, spec)["BN-FREEZE"].ok
    lost = _outcomes(_with_bug(impl, freeze=lambda inst: None), case, spec)["BN-FREEZE"]
    assert not lost.ok and lost.measured == {"frozen_mode": "training"}, (lost.note, lost.measured)


@pytest.mark.clause("BN-MASK")
@pytest.mark.parametrize("name", ["flax.linen.BatchNorm", "flax.nnx.BatchNorm", "keras.layers.BatchNormalization[jax]"])
def test_a_dropped_mask_is_reported_and_the_real_mask_conforms(spec, name):
    pytest.importorskip("flax")
    pytest.importorskip("keras")
    impl = find(name)
    for case in (_case((7, 3), fa=1), _case((3, 2, 2, 4), fa=3, seed=9)):
        assert _outcomes(impl, case, spec)["BN-MASK"].ok
        dropped = _with_bug(impl, forward_masked=lambda inst, x, mask, training: inst.forward(x, training, None))
        out = _outcomes(dropped, case, spec)["BN-MASK"]
        assert not out.ok and "statistics of all" in out.note, out.note


@pytest.mark.clause("BN-MASK")
def test_the_mask_keeps_two_positions_and_masks_one():
    from bnconf.cases.case import second_order_arrays
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(2, 5))))
        fa = int(rng.integers(len(shape)))
        m = second_order_arrays(_case(shape, fa=fa, seed=int(rng.integers(1 << 30)))).get("mask")
        positions = int(np.prod(shape)) // shape[fa]
        if positions < 3:
            assert m is None
            continue
        assert m.shape[fa] == 1 and m.ndim == len(shape) and 2 <= m.sum() < positions

"""BN-STATE-PERSIST held to modules a user writes: running statistics kept as plain tensor
attributes (the d2l pattern) stay float32 under .to(torch.float64) and are lost by a
state_dict() round trip, and that is the one finding (its float32 running statistics are not
reported again under BN-DTYPE-F64); non-persistent buffers are lost by the round trip alone;
the same module with registered buffers conforms at every seed tried."""
import textwrap

import pytest

torch = pytest.importorskip("torch")

MODULES = textwrap.dedent('''
    import torch

    class _BN(torch.nn.Module):
        def __init__(self, num_features):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(num_features))
            self.bias = torch.nn.Parameter(torch.zeros(num_features))
            self.keep(torch.zeros(num_features), torch.ones(num_features))

        def forward(self, x):
            axes = [0] + list(range(2, x.dim()))
            shape = [1, -1] + [1] * (x.dim() - 2)
            if self.training:
                n = x.numel() // x.shape[1]
                if n == 1:
                    raise ValueError("Expected more than 1 value per channel when training")
                mean, var = x.mean(axes), x.var(axes, unbiased=False)
                with torch.no_grad():
                    self.keep(0.9 * self.running_mean + 0.1 * mean, 0.9 * self.running_var + 0.1 * var * n / (n - 1))
            else:
                mean, var = self.running_mean, self.running_var
            x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + 1e-5)
            return self.weight.reshape(shape) * x_hat + self.bias.reshape(shape)

    class PlainAttributes(_BN):
        def keep(self, mean, var):
            self.running_mean, self.running_var = mean.detach(), var.detach()

    class Buffers(_BN):
        persistent = True

        def keep(self, mean, var):
            if not hasattr(self, "running_mean"):
                self.register_buffer("running_mean", mean, persistent=self.persistent)
                self.register_buffer("running_var", var, persistent=self.persistent)
            else:
                self.running_mean.copy_(mean)
                self.running_var.copy_(var)

    class NonPersistentBuffers(Buffers):
        """Moved by .to() with the parameters, but left out of state_dict()."""
        persistent = False
''')


@pytest.mark.clause("BN-STATE-PERSIST")
def test_statistics_kept_as_plain_attributes_are_a_state_persistence_violation(audit_torch_module):
    rep = audit_torch_module(MODULES, "PlainAttributes", 0)
    clauses = {v["clause"] for v in rep.violations}
    assert clauses == {"BN-STATE-PERSIST"}, rep.violations
    (v,) = rep.violations
    assert "running statistics stay float32" in v["message"], v
    assert "BN-DTYPE-F64" in {b["clause"] for b in rep.blocked}, rep.blocked


@pytest.mark.clause("BN-STATE-PERSIST")
def test_buffers_left_out_of_the_state_dict_are_a_state_persistence_violation(audit_torch_module):
    rep = audit_torch_module(MODULES, "NonPersistentBuffers", 0)
    assert {v["clause"] for v in rep.violations} == {"BN-STATE-PERSIST"}, rep.violations
    (v,) = rep.violations
    assert "not part of the saved state" in v["message"] and "stay float32" not in v["message"], v


@pytest.mark.clause("BN-STATE-PERSIST")
@pytest.mark.parametrize("seed", range(3))
def test_registered_buffers_conform(audit_torch_module, seed):
    rep = audit_torch_module(MODULES, "Buffers", seed)
    assert not rep.violations, rep.violations


@pytest.mark.clause("BN-STATE-PERSIST")
@pytest.mark.parametrize("name", ["flax.linen.BatchNorm", "flax.nnx.BatchNorm", "keras.layers.BatchNormalization[jax]"])
def test_flax_and_keras_checkpoints_keep_the_statistics_and_a_lost_one_is_caught(spec, name):
    """Flax's to_bytes/from_bytes and Keras' get_weights/set_weights round trips conform; the
    same layer whose restore forgets the statistics (a fresh layer's are kept) is reported."""
    pytest.importorskip("flax")
    pytest.importorskip("keras")
    from bnconf.adapters._protocol import Implementation
    from bnconf.cases.case import Case
    from bnconf.running.audit import evaluate
    from bnconf.running.registry import find
    impl = find(name)

    def build(params, device):
        inst = impl.build(params, device)
        inst.reload = lambda: inst.__dict__.update(vars(impl.build(dict(params, affine="default"), device)))
        return inst
    lossy = Implementation(name + "[lossy]", impl.profile, impl.capabilities, build, impl.versions, impl.devices,
                           impl.family)
    prof = spec.profile(impl.profile)
    applicable = {c.id for c in spec.clauses_for(prof)}
    case = Case(seed=4, shape=(6, 3), feature_axis=1, dtype="float32", steps=2, affine="random", momentum=0.9,
                eps=1e-3, kappa=0.0, log_scale=0.0, special="none", special_channel=0, track_running_stats=True,
                memory_format="contiguous", grads=True, centred=False)
    good = {o.clause: o for o in evaluate(impl, case, "cpu", spec, prof, applicable)[0]}
    assert good["BN-STATE-PERSIST"].ok, good["BN-STATE-PERSIST"].note
    bad = {o.clause: o for o in evaluate(lossy, case, "cpu", spec, prof, applicable)[0]}
    assert not bad["BN-STATE-PERSIST"].ok and "did not survive save and load" in bad["BN-STATE-PERSIST"].note

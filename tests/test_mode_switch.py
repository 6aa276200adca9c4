"""BN-MODE-SWITCH held to modules a user writes: the d2l pattern that picks its mode from
torch.is_grad_enabled() is reported under the mode-switch clause (and only the probes show it:
the main trace's eval runs under no_grad, as such a module's own evaluation loop does), and a
module that follows .train()/.eval() conforms to it at every seed tried."""
import textwrap

import pytest

torch = pytest.importorskip("torch")

GRAD_MODE_SWITCHED = textwrap.dedent('''
    import torch

    class GradModeBN(torch.nn.Module):
        """A correct BN, except that it trains whenever gradients are recorded (d2l's test)."""
        def __init__(self, num_features):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(num_features))
            self.bias = torch.nn.Parameter(torch.zeros(num_features))
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))

        def forward(self, x):
            axes = [0] + list(range(2, x.dim()))
            shape = [1, -1] + [1] * (x.dim() - 2)
            if torch.is_grad_enabled():
                mean = x.mean(axes)
                var = x.var(axes, unbiased=False)
                n = x.numel() // x.shape[1]
                if n == 1:
                    raise ValueError("Expected more than 1 value per channel when training")
                with torch.no_grad():
                    self.running_mean.mul_(0.9).add_(0.1 * mean)
                    self.running_var.mul_(0.9).add_(0.1 * var * n / (n - 1))
            else:
                mean, var = self.running_mean, self.running_var
            x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + 1e-5)
            return self.weight.reshape(shape) * x_hat + self.bias.reshape(shape)

    class Follows(torch.nn.BatchNorm1d):
        pass
''')


@pytest.mark.clause("BN-MODE-SWITCH")
def test_a_module_that_trains_whenever_gradients_are_on_is_a_mode_switch_violation(audit_torch_module):
    rep = audit_torch_module(GRAD_MODE_SWITCHED, "GradModeBN", 0)
    clauses = {v["clause"] for v in rep.violations}
    assert "BN-MODE-SWITCH" in clauses, rep.violations
    v = next(v for v in rep.violations if v["clause"] == "BN-MODE-SWITCH")
    assert "eval-mode call with gradients on" in v["message"], v
    # its main trace (eval under no_grad) is correct: nothing else is blamed
    assert clauses == {"BN-MODE-SWITCH"}, clauses


@pytest.mark.clause("BN-MODE-SWITCH")
@pytest.mark.parametrize("seed", range(3))
def test_a_module_switched_by_train_and_eval_conforms(audit_torch_module, seed):
    rep = audit_torch_module(GRAD_MODE_SWITCHED, "Follows", seed)
    assert not [v for v in rep.violations if v["clause"] == "BN-MODE-SWITCH"], rep.violations

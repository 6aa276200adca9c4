"""BN-GRAD-GRAD: the oracle's closed form held to two independent references (central
differences of the first-order oracle, torch's float64 double backward), the error model held to
a correct float32 kernel over many random cases and to a first-order-correct kernel that is
second-order wrong, and the check held to user modules: a hand-written backward that treats
the batch statistics as constants is reported under BN-GRAD-GRAD alone."""
import textwrap

import numpy as np
import pytest

from bnconf.reference import error_model as em
from bnconf.reference import oracle

F32 = em.Model(2.0 ** -24, 4.0, 1.0, 1.0)
F64 = em.Model(2.0 ** -53, 4.0, 1.0, 1.0)


def _draw(rng, fa=1):
    rank = int(rng.integers(2, 5))
    shape = [int(rng.integers(2, 6))] + [int(rng.integers(1, 4)) for _ in range(rank - 1)]
    c = shape[fa % rank]
    x = rng.standard_normal(shape) * 10 ** rng.uniform(-2, 2) + rng.uniform(-3, 3)
    return x, rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(c), 10 ** rng.uniform(-5, -1)


@pytest.mark.clause("BN-GRAD-GRAD")
@pytest.mark.parametrize("fa", [1, -1])
def test_closed_form_matches_central_differences_of_the_first_order_oracle(fa):
    rng = np.random.default_rng(7)
    for _ in range(20):
        x, dy, v, w, eps = _draw(rng, fa)
        ddx, ddw, ddy = oracle.grads_second_train(x, dy, v, w, eps, fa)

        def f(xx=x, dd=dy, ww=w):   # F = sum(v * dx), dx the first-order oracle's
            return float((oracle.grads_train(xx, dd, ww, eps, fa)[0] * v).sum())
        h = 1e-6 * (np.abs(x).max() + 1.0)
        k = tuple(int(rng.integers(s)) for s in x.shape)
        e = np.zeros_like(x)
        e[k] = h
        fd = (f(xx=x + e) - f(xx=x - e)) / (2 * h)
        assert abs(fd - ddx[k]) <= 1e-5 * (np.abs(ddx).max() + 1e-12) + 1e-6 * abs(fd), (fd, ddx[k])
        hw = 1e-6 * (np.abs(w).max() + 1.0)
        ew = np.zeros_like(w)
        ew[0] = hw
        fdw = (f(ww=w + ew) - f(ww=w - ew)) / (2 * hw)
        assert abs(fdw - ddw[0]) <= 1e-6 * (np.abs(ddw).max() + 1e-12), (fdw, ddw[0])
        # sum(v * dx) is linear in dy: its dy-derivative is exact in one difference
        ed = np.zeros_like(dy)
        ed[k] = 1.0
        assert abs(f(dd=dy + ed) - f() - ddy[k]) <= 1e-8 * (np.abs(ddy).max() + 1.0)


@pytest.mark.clause("BN-GRAD-GRAD")
def test_closed_form_matches_torch_double_backward_in_float64():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for _ in range(20):
        x, dy, v, w, eps = _draw(rng)
        xt, dyt = torch.tensor(x, requires_grad=True), torch.tensor(dy, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        y = torch.nn.functional.batch_norm(xt, None, None, wt, None, training=True, eps=eps)
        gx, = torch.autograd.grad((y * dyt).sum(), xt, create_graph=True)
        got = torch.autograd.grad((gx * torch.tensor(v)).sum(), (xt, wt, dyt))
        exp = oracle.grads_second_train(x, dy, v, w, eps, 1)
        # the difference is of float64 rounding: within the error model's float64 bound
        for g, e, b in zip(got, exp, em.grads_second_bound(F64, x, dy, v, w, eps, 1, 2.0 ** -53, exp)):
            assert np.all(np.abs(g.numpy() - e) <= b), float(np.max(np.abs(g.numpy() - e) / b))


def _torch_second(x, dy, v, w, eps, variance):
    import torch
    xt, dyt = torch.tensor(x, requires_grad=True), torch.tensor(dy, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    axes = [0] + list(range(2, xt.dim()))
    shape = [1, -1] + [1] * (xt.dim() - 2)
    mean = xt.mean(axes, keepdim=True)
    centre = mean.detach() if variance == "stop_gradient_mean" else mean   # tf.nn.moments' shortcut
    var = ((xt - centre) ** 2).mean(axes, keepdim=True)
    y = (xt - mean) / torch.sqrt(var + eps) * wt.reshape(shape)
    gx, = torch.autograd.grad((y * dyt).sum(), xt, create_graph=True)
    got = torch.autograd.grad((gx * torch.tensor(v, dtype=xt.dtype)).sum(), (xt, wt, dyt))
    return [g.double().numpy() for g in got]


@pytest.mark.clause("BN-GRAD-GRAD")
def test_a_correct_float32_kernel_is_within_the_bound_and_a_stop_gradient_mean_is_not():
    pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    worst, caught = 0.0, 0
    for _ in range(150):
        x, dy, v, w, eps = _draw(rng)
        x, dy, v, w = (a.astype(np.float32) for a in (x, dy, v, w))
        exp = oracle.grads_second_train(x, dy, v, w, eps, 1)
        bounds = em.grads_second_bound(F32, x, dy, v, w, eps, 1, 2.0 ** -24, exp)
        ratio = max(float(np.max(np.abs(g - e) / b)) for g, e, b in zip(_torch_second(x, dy, v, w, eps, "exact"),
                                                                            exp, bounds))
        worst = max(worst, ratio)
        # first-order right (d var/d mean = 0 at the mean), second-order wrong
        wrong = _torch_second(x.astype(np.float64), dy, v, w, eps, "stop_gradient_mean")
        caught += float(np.max(np.abs(wrong[0] - exp[0]) / bounds[0])) > 1
    assert worst <= 1.0, worst
    assert caught >= 140, caught   # every case with more than one value per channel and a spread


DETACHED_BACKWARD = textwrap.dedent('''
    import torch

    class _Fn(torch.autograd.Function):
        """The textbook backward, written by hand: right to first order. Its saved x_hat and
        inverse std are constants to autograd, so differentiating dx again misses their terms."""
        @staticmethod
        def forward(ctx, x, weight, bias, eps):
            axes = [0] + list(range(2, x.dim()))
            shape = [1, -1] + [1] * (x.dim() - 2)
            mean = x.mean(axes, keepdim=True)
            invstd = 1.0 / torch.sqrt(x.var(axes, unbiased=False, keepdim=True) + eps)
            x_hat = (x - mean) * invstd
            ctx.save_for_backward(x_hat, invstd, weight)
            ctx.shape, ctx.axes = shape, axes
            return x_hat * weight.reshape(shape) + bias.reshape(shape), mean, invstd

        @staticmethod
        def backward(ctx, dy, _dm, _di):
            x_hat, invstd, weight = ctx.saved_tensors
            axes, shape = ctx.axes, ctx.shape
            n = dy.numel() // dy.shape[1]
            s_dy = dy.sum(axes, keepdim=True)
            s_dyx = (dy * x_hat).sum(axes, keepdim=True)
            dx = weight.reshape(shape) * invstd / n * (n * dy - s_dy - x_hat * s_dyx)
            return dx, s_dyx.reshape(-1), s_dy.reshape(-1), None

    class HandBackwardBN(torch.nn.Module):
        def __init__(self, num_features):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(num_features))
            self.bias = torch.nn.Parameter(torch.zeros(num_features))
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))

        def forward(self, x):
            shape = [1, -1] + [1] * (x.dim() - 2)
            if not self.training:
                return (x - self.running_mean.reshape(shape)) / torch.sqrt(self.running_var.reshape(shape) + 1e-5) \\
                    * self.weight.reshape(shape) + self.bias.reshape(shape)
            y, mean, invstd = _Fn.apply(x, self.weight, self.bias, 1e-5)
            n = x.numel() // x.shape[1]
            if n == 1:
                raise ValueError("Expected more than 1 value per channel when training")
            with torch.no_grad():
                self.running_mean.mul_(0.9).add_(0.1 * mean.reshape(-1))
                var = 1.0 / invstd.reshape(-1) ** 2 - 1e-5
                self.running_var.mul_(0.9).add_(0.1 * var * n / (n - 1))
            return y

    class Library(torch.nn.BatchNorm1d):
        pass
''')


@pytest.mark.clause("BN-GRAD-GRAD", "BN-GRAD-TRAIN")
def test_a_hand_written_backward_is_reported_under_the_second_derivative_clause_alone(audit_torch_module):
    pytest.importorskip("torch")
    rep = audit_torch_module(DETACHED_BACKWARD, "HandBackwardBN", 0)
    clauses = {v["clause"] for v in rep.violations}
    assert "BN-GRAD-GRAD" in clauses, rep.violations
    assert "BN-GRAD-TRAIN" not in clauses, rep.violations   # its first derivatives are right
    assert clauses <= {"BN-GRAD-GRAD", "BN-VAR-STABLE"}, clauses   # var+eps round trip: conditioning only


@pytest.mark.clause("BN-GRAD-GRAD", "BN-FREEZE", "BN-RESET")
@pytest.mark.parametrize("seed", range(3))
def test_torch_batchnorm_as_a_user_module_conforms_to_the_new_clauses(audit_torch_module, seed):
    pytest.importorskip("torch")
    rep = audit_torch_module(DETACHED_BACKWARD, "Library", seed)
    passed = {p["clause"] for p in rep.passed}
    assert {"BN-GRAD-GRAD", "BN-FREEZE", "BN-RESET"} <= passed, (rep.violations, rep.not_exercised)

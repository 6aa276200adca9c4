"""What the torch specimens share. A function keeps no state of its own: the caller holds
gamma, beta and the moving statistics, shaped as the document's own class holds them ((1, C)
or (1, C, 1, 1); moving mean 0, moving variance 1), and calls the function as written. A
module is built as written and only moved to the case's dtype and parameters."""
import contextlib

import numpy as np
import torch

from .._protocol import Unsupported


class CallerHeldState:
    takes = "eps and momentum"      # what the function must be given (no defaults of its own)
    switches_grad_mode = True       # eval runs under torch.no_grad(), as the document's module does

    def __init__(self, params):
        if params["momentum"] in ("default", None) or params["eps"] == "default":
            raise Unsupported(f"the function takes {self.takes} explicitly")
        self.p = params
        c, rank = params["num_features"], params["rank"]
        self.shape = (1, c) if rank == 2 else (1, c, 1, 1)
        dt = getattr(torch, params["dtype"])
        w = np.ones(c) if params["affine"] != "random" else params["weight"]
        b = np.zeros(c) if params["affine"] != "random" else params["bias"]
        self.gamma = torch.tensor(np.asarray(w, np.float64), dtype=dt).reshape(self.shape).requires_grad_(True)
        self.beta = torch.tensor(np.asarray(b, np.float64), dtype=dt).reshape(self.shape).requires_grad_(True)
        self.mm, self.mv = torch.zeros(self.shape, dtype=dt), torch.ones(self.shape, dtype=dt)

    def call(self, xt, training):
        """The document's function on xt and the held state: (y, new moving mean, new moving var)."""
        raise NotImplementedError

    def forward(self, x, training, dy):
        xt = torch.as_tensor(x)
        mode = (torch.enable_grad() if training else torch.no_grad()) if self.switches_grad_mode \
            else contextlib.nullcontext()
        with mode:
            xt.requires_grad_(training and dy is not None)
            y, mm, mv = self.call(xt, training)
        out = {"y": y.detach().numpy().copy(), "y_dtype": str(y.dtype).replace("torch.", "")}
        if training and dy is not None:
            (y * torch.as_tensor(dy)).sum().backward()
            out.update(dx=xt.grad.numpy().copy(), dweight=self.gamma.grad.detach().numpy().reshape(-1).copy(),
                       dbias=self.beta.grad.detach().numpy().reshape(-1).copy())
            self.gamma.grad = self.beta.grad = None
        if training:
            self.mm, self.mv = mm.detach().reshape(self.shape), mv.detach().reshape(self.shape)
        return out

    def grad_grad(self, x, dy, v):
        return second_backward(lambda xt: self.call(xt, True)[0], x, dy, v, self.gamma)

    def running_stats(self):
        return self.mm.numpy().reshape(-1).copy(), self.mv.numpy().reshape(-1).copy()

    def counter(self):
        return None


def second_backward(call, x, dy, v, gamma):
    """BN-GRAD-GRAD as a user differentiates the specimen twice: dx of sum(dy * call(x)) with
    create_graph=True, then the gradients of sum(v * dx) with respect to x, dy and gamma."""
    xt = torch.as_tensor(x).clone().requires_grad_(True)
    dyt = torch.as_tensor(dy).clone().requires_grad_(True)
    with torch.enable_grad():
        dx, = torch.autograd.grad((call(xt) * dyt).sum(), xt, create_graph=True)
        got = torch.autograd.grad((dx * torch.as_tensor(v)).sum(), [xt, dyt, gamma], allow_unused=True)
    got = [torch.zeros_like(t) if g is None else g for g, t in zip(got, (xt, dyt, gamma))]
    return {"ddx": got[0].detach().numpy().copy(), "ddy": got[1].detach().numpy().copy(),
            "ddweight": got[2].detach().numpy().reshape(-1).copy()}


def prepare_module(m, params, stats):
    """The document's module `m` in the case's dtype, its moving statistics (the attribute
    names `stats`) cast with it, and the case's gamma and beta where the case draws them."""
    dt = getattr(torch, params["dtype"])
    m = m.to(dt)
    for name in stats:
        setattr(m, name, getattr(m, name).to(dt))
    if params["affine"] == "random":
        with torch.no_grad():
            m.gamma.copy_(torch.as_tensor(params["weight"]).reshape(m.gamma.shape))
            m.beta.copy_(torch.as_tensor(params["bias"]).reshape(m.beta.shape))
    return m


def float64_dtypes(m, stats):
    """m.to(torch.float64), as a user converts a model, and the dtypes its parameters and its
    running statistics (the attributes `stats`) have afterwards."""
    m = m.to(torch.float64)
    param = next((str(p.dtype) for p in m.parameters()), "none").replace("torch.", "")
    stat = next((str(getattr(m, n).dtype) for n in stats if isinstance(getattr(m, n, None), torch.Tensor)), "none")
    return m, {"param_dtype": param, "stats_dtype": stat.replace("torch.", "")}

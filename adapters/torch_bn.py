"""PyTorch: torch.nn.BatchNorm1d/2d/3d and torch.nn.functional.batch_norm.

Thin: builds the real layer or call, runs it, returns NumPy. torch is imported lazily.
"""
import numpy as np

from ._protocol import Implementation, Unsupported, default_capabilities, np_out

FAMILY = "torch"


def _torch():
    import torch
    return torch


def _dtype(name):
    torch = _torch()
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
            "float64": torch.float64}[name]


def _to_np(t):
    torch = _torch()
    t = t.detach().cpu()
    name = str(t.dtype).replace("torch.", "")
    if t.dtype == torch.bfloat16:
        t = t.float()
    return np_out(t.numpy().copy(), name)  # a copy: the buffer changes in place later


def reload_into(m, fresh):
    """A checkpoint as users write one: torch.save(m.state_dict()), then load_state_dict into a
    freshly built module of the same class; returns the fresh module (BN-STATE-PERSIST). The
    one copy: the specimens and user modules (running/targets.py) reload through it too."""
    import io
    torch = _torch()
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    return fresh


def _tensor(a, dtype, device):
    torch = _torch()
    return torch.as_tensor(np.asarray(a, np.float32 if dtype == "bfloat16" else a.dtype)).to(device=device, dtype=_dtype(dtype))


def _kwargs(params):
    kw = {}
    if params["eps"] != "default":
        kw["eps"] = float(params["eps"])
    if params["momentum"] != "default":
        kw["momentum"] = params["momentum"]
    return kw


def grad_grad(call, x, dy, v, weight, dtype, device):
    """Two backward passes as users write them: dx = grad(sum(dy * y), x, create_graph=True),
    then the gradients of sum(v * dx) with respect to x, gamma and dy. call(xt) -> y."""
    torch = _torch()
    xt = _tensor(x, dtype, device).requires_grad_(True)
    dyt = _tensor(dy, dtype, device).requires_grad_(True)
    y = call(xt)
    dx, = torch.autograd.grad((y * dyt).sum(), xt, create_graph=True)
    leaves = [xt, dyt] + ([weight] if weight is not None and weight.requires_grad else [])
    got = torch.autograd.grad((dx * _tensor(v, dtype, device)).sum(), leaves, allow_unused=True)
    # None: the second pass does not depend on that leaf at all, a zero derivative
    got = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(got, leaves)]
    out = {"ddx": _to_np(got[0])[0], "ddy": _to_np(got[1])[0]}
    if len(leaves) > 2:
        out["ddweight"] = _to_np(got[2])[0]
    return out


class _ModuleInstance:
    def __init__(self, cls_name, params, device):
        torch = _torch()
        cls = getattr(torch.nn, cls_name)
        self.params, self.device = params, device
        affine = params["affine"] != "off"
        self.m = cls(params["num_features"], affine=affine,
                     track_running_stats=params["track_running_stats"], **_kwargs(params))
        self.m = self.m.to(device=device, dtype=_dtype(params["dtype"]))
        if params["affine"] == "random":
            with torch.no_grad():
                self.m.weight.copy_(_tensor(params["weight"], params["dtype"], device))
                self.m.bias.copy_(_tensor(params["bias"], params["dtype"], device))
        self.memory_format = params.get("memory_format", "contiguous")
        self.cls_name = cls_name

    def reload(self):
        """The state_dict round trip into a fresh module, built without the case's random affine
        (the checkpoint must bring it back)."""
        fresh = _ModuleInstance(self.cls_name, dict(self.params, affine="default" if self.params["affine"] == "random"
                                                    else self.params["affine"]), self.device)
        self.m = reload_into(self.m, fresh.m)

    def to_float64(self):
        torch = _torch()
        self.m = self.m.to(torch.float64)
        params = [str(p.dtype) for p in self.m.parameters()]
        stats = [str(b.dtype) for n, b in self.m.named_buffers() if n != "num_batches_tracked"]
        return {"param_dtype": (params or stats or ["none"])[0].replace("torch.", ""),
                "stats_dtype": (stats or params or ["none"])[0].replace("torch.", "")}

    def forward(self, x, training, dy):
        torch = _torch()
        self.m.train(training)
        xt = _tensor(x, self.params["dtype"], self.device)
        if self.memory_format == "channels_last":
            xt = xt.contiguous(memory_format=torch.channels_last if xt.dim() == 4 else torch.channels_last_3d)
        self.m.zero_grad(set_to_none=True)
        xt.requires_grad_(dy is not None)
        y = self.m(xt)
        out = dict(zip(("y", "y_dtype"), _to_np(y)))
        if dy is not None:
            (y * _tensor(dy, self.params["dtype"], self.device)).sum().backward()
            out["dx"] = _to_np(xt.grad)[0]
            if self.m.weight is not None and self.m.weight.requires_grad:
                out["dweight"] = _to_np(self.m.weight.grad)[0]
                out["dbias"] = _to_np(self.m.bias.grad)[0]
        return out

    def grad_grad(self, x, dy, v):
        torch = _torch()
        self.m.train(True)

        def call(xt):
            if self.memory_format == "channels_last":
                xt = xt.contiguous(memory_format=torch.channels_last if xt.dim() == 4 else torch.channels_last_3d)
            return self.m(xt)
        return grad_grad(call, x, dy, v, self.m.weight, self.params["dtype"], self.device)

    def freeze(self):
        """What freezing means to torch users: the parameters stop requiring gradients."""
        self.m.requires_grad_(False)

    def reset_stats(self):
        self.m.reset_running_stats()

    def forward_under(self, x, training, grad_enabled):
        """The module switched by .train()/.eval() alone, with the grad mode set around the call."""
        torch = _torch()
        self.m.train(training)
        with torch.set_grad_enabled(grad_enabled):
            y = self.m(_tensor(x, self.params["dtype"], self.device))
        return {"y": _to_np(y)[0]}

    def running_stats(self):
        if self.m.running_mean is None:
            return None
        return _to_np(self.m.running_mean)[0], _to_np(self.m.running_var)[0]

    def counter(self):
        t = getattr(self.m, "num_batches_tracked", None)
        return None if t is None else int(t.item())


class _FunctionalInstance:
    """F.batch_norm with explicit running-stat tensors that it updates in place."""

    def __init__(self, params, device):
        torch = _torch()
        self.params, self.device = params, device
        c, dt = params["num_features"], _dtype(params["dtype"])
        self.rm = self.rv = None
        if params["track_running_stats"]:
            self.rm = torch.zeros(c, dtype=dt, device=device)
            self.rv = torch.ones(c, dtype=dt, device=device)
        self.w = self.b = None
        if params["affine"] == "random":
            self.w = _tensor(params["weight"], params["dtype"], device)
            self.b = _tensor(params["bias"], params["dtype"], device)
        elif params["affine"] == "default":
            self.w, self.b = torch.ones(c, dtype=dt, device=device), torch.zeros(c, dtype=dt, device=device)

    def forward(self, x, training, dy):
        torch = _torch()
        F = torch.nn.functional
        xt = _tensor(x, self.params["dtype"], self.device)
        leaves = [xt] + [t for t in (self.w, self.b) if t is not None]
        for t in leaves:
            t.grad = None
            t.requires_grad_(dy is not None)
        if not training and self.rm is None:
            raise Unsupported("F.batch_norm has no eval mode without running statistics")
        y = F.batch_norm(xt, self.rm, self.rv, self.w, self.b, training=training, **_kwargs(self.params))
        out = dict(zip(("y", "y_dtype"), _to_np(y)))
        if dy is not None:
            (y * _tensor(dy, self.params["dtype"], self.device)).sum().backward()
            out["dx"] = _to_np(xt.grad)[0]
            if self.w is not None:
                out["dweight"], out["dbias"] = _to_np(self.w.grad)[0], _to_np(self.b.grad)[0]
        for t in leaves:
            t.requires_grad_(False)
        return out

    def grad_grad(self, x, dy, v):
        F = _torch().nn.functional
        w = None if self.w is None else self.w.detach().clone().requires_grad_(True)
        return grad_grad(lambda xt: F.batch_norm(xt, self.rm, self.rv, w, self.b, training=True, **_kwargs(self.params)),
                         x, dy, v, w, self.params["dtype"], self.device)

    def forward_under(self, x, training, grad_enabled):
        """training= alone chooses the mode; the grad mode is set around the call."""
        torch = _torch()
        if not training and self.rm is None:
            raise Unsupported("F.batch_norm has no eval mode without running statistics")
        with torch.set_grad_enabled(grad_enabled):
            y = torch.nn.functional.batch_norm(_tensor(x, self.params["dtype"], self.device), self.rm, self.rv,
                                               self.w, self.b, training=training, **_kwargs(self.params))
        return {"y": _to_np(y)[0]}

    def running_stats(self):
        if self.rm is None:
            return None
        return _to_np(self.rm)[0], _to_np(self.rv)[0]

    def counter(self):
        return None


def versions():
    torch = _torch()
    return {"torch": torch.__version__}


def devices():
    torch = _torch()
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    return devs


def _module(cls_name, ranks, channels_last):
    def build(params, device):
        if params["rank"] not in ranks:
            raise Unsupported(f"torch.nn.{cls_name} takes inputs of rank {ranks}")
        return _ModuleInstance(cls_name, params, device)
    caps = default_capabilities(ranks=ranks, feature_axes=("first",), momentum_none=True,
                                no_running_stats=True, channels_last_memory=channels_last, ambient_grad_mode=True,
                                saved_state=True, second_grads=True, freeze=True, reset_stats=True)
    return Implementation(f"torch.nn.{cls_name}", "torch", caps, build, versions, devices, FAMILY)


def _functional():
    def build(params, device):
        if params["momentum"] is None:
            raise Unsupported("F.batch_norm takes a float momentum")
        return _FunctionalInstance(params, device)
    # without running statistics F.batch_norm has no eval mode: "running_mean must be defined in
    # evaluation mode" (a caller passes training=True)
    caps = default_capabilities(feature_axes=("first",), no_running_stats=True, default_init=False,
                                eval_without_stats=False, ambient_grad_mode=True, second_grads=True)
    return Implementation("torch.nn.functional.batch_norm", "torch", caps, build, versions, devices, FAMILY)


def implementations():
    return [_module("BatchNorm1d", (2, 3), False), _module("BatchNorm2d", (4,), True),
            _module("BatchNorm3d", (5,), True), _functional()]

"""Specimen from seeds/004 (Chinese interview notes "Batch normalization（批归一化）", section
"BN层的从零实现"): `batch_norm(input_data, ...)` and `class batchNorm`.

The notes name no framework profile; the code is PyTorch written after d2l, so it is
audited under the closest profile, `torch`. The code does not run as written, so it is kept
here verbatim as text (SOURCE) and run by compiling it, which records each error exactly:

* the module as written does not compile: `super(batchNorm, self) __init__()` is a
  SyntaxError, so neither `batch_norm` nor `batchNorm` can be imported from it;
* `batch_norm` alone compiles, and in training always fails its own
  `assert len(input_data.shape) == (2, 4)` (an int never equals a tuple);
* past that: `input_adta` (NameError), `keep_dim=True` (TypeError in torch), and
  `X.device` in batchNorm.forward (NameError).

REPAIRS lists the minimal repair of each; the repaired code keeps everything else as
written, including `sqrt(var - eps)`, the old-weight momentum 0.9 and the mode chosen by
torch.is_grad_enabled(). What it still gets wrong is a finding, not a repair.
"""
from .._protocol import Implementation, Unsupported, default_capabilities
from ..torch_bn import reload_into
from .torch_specimen import CallerHeldState, float64_dtypes, prepare_module

STATS = ("moving_mean", "moving_var")   # plain tensor attributes in the document's class, not buffers
SOURCE_DOCUMENT = "seeds/004 (Batch normalization（批归一化）interview notes)"
CLAIMED_PROFILE = "torch"

SOURCE = '''def batch_norm(input_data, gamma, beta, moving_mean, moving_var, eps, momentum):
    if not torch.is_grad_enabled():
        X_hat = (input_data - moving_mean)/torch.sqrt(moving_var - eps)
    else:
        assert len(input_data.shape) == (2, 4)
        if len(input_adta.shape) == 2:
        #全连接层
            mean = input_data.mean(dim=0)
            var = ((input_data - mean)**2).mean(dim=0)
        else:
            mean = input_data.mean(dim=0, keep_dim=True).mean(dim=2, keep_dim=True).mean(dim=3, keep_dim=True)
            var = ((input_data - mean)**2).mean(dim=0, keep_dim=True).mean(dim=2, keep_dim=True).mean(dim=3, keep_dim=True)
        X_hat = (input_data - mean)/torch.sqrt(var - eps)
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
        moving_var = momentum * moving_var + (1.0 - momentum) * var
    Y = gamma*X_hat + beta
    return Y, moving_mean, moving_var

class batchNorm(nn.Module):
    def __init__ (self, num_features, num_dims):
        super(batchNorm, self) __init__()
        if num_dims == 2:
            shape = (1, num_features)
        else:
            shape = (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.moving_mean = torch.zeros(shape)
        self.moving_var = torch.ones(shape)
    def forward(self, x):
        if self.moving_mean.device != X.device:
            self.moving_mean = self.moving_mean.to(X.device)
            self.moving_var = self.moving_var.to(X.device)
        Y, self.moving_mean, self.moving_var = batch_norm(x, self.gamma, self.beta, self.moving_mean, self.moving_var, 1e-5, 0.9)
        return Y
'''

REPAIRS = [
    ("assert len(input_data.shape) == (2, 4)", "assert len(input_data.shape) in (2, 4)",
     "an int compared with a tuple is always False: every training call fails the assert"),
    ("len(input_adta.shape)", "len(input_data.shape)", "NameError: input_adta is a typo"),
    ("keep_dim=True", "keepdim=True", "TypeError: torch's keyword is keepdim"),
    ("super(batchNorm, self) __init__()", "super(batchNorm, self).__init__()", "SyntaxError: missing '.'"),
    ("!= X.device", "!= x.device", "NameError: the argument is x"),
    ("self.moving_mean.to(X.device)", "self.moving_mean.to(x.device)", "NameError: the argument is x"),
    ("self.moving_var.to(X.device)", "self.moving_var.to(x.device)", "NameError: the argument is x"),
]


def repaired_source() -> str:
    src = SOURCE
    for old, new, _why in REPAIRS:
        assert old in src, old
        src = src.replace(old, new)
    return src


def _namespace(src, only_function=False):
    import torch
    from torch import nn
    ns = {"torch": torch, "nn": nn}
    if only_function:
        src = src[:src.index("class batchNorm")]
    exec(compile(src, "seeds/004 batch_norm" + (" (repaired)" if src != SOURCE and "keepdim=True" in src else ""),
                 "exec"), ns)
    return ns


class _FunctionInstance(CallerHeldState):
    def __init__(self, params, repaired):
        super().__init__(params)
        self.fn = _namespace(repaired_source() if repaired else SOURCE, only_function=True)["batch_norm"]

    def call(self, xt, training):
        return self.fn(xt, self.gamma, self.beta, self.mm, self.mv, float(self.p["eps"]), float(self.p["momentum"]))


class _ModuleInstance:
    def __init__(self, params, repaired):
        import torch
        if params["momentum"] != "default" or params["eps"] != "default":
            raise Unsupported("the module fixes eps=1e-5 and momentum=0.9 itself")
        self.torch, self.p = torch, params
        ns = _namespace(repaired_source() if repaired else SOURCE)
        self.cls = ns["batchNorm"]
        self.m = prepare_module(self.cls(params["num_features"], params["rank"]), params, STATS)

    def reload(self):
        fresh = prepare_module(self.cls(self.p["num_features"], self.p["rank"]), dict(self.p, affine="default"), STATS)
        self.m = reload_into(self.m, fresh)

    def to_float64(self):
        self.m, dtypes = float64_dtypes(self.m, STATS)
        return dtypes

    def forward(self, x, training, dy):
        torch = self.torch
        self.m.train(training)
        xt = torch.as_tensor(x)
        with (torch.enable_grad() if training else torch.no_grad()):
            y = self.m(xt)
        self.m.moving_mean, self.m.moving_var = self.m.moving_mean.detach(), self.m.moving_var.detach()
        return {"y": y.detach().numpy().copy(), "y_dtype": str(y.dtype).replace("torch.", "")}

    def forward_under(self, x, training, grad_enabled):
        """As a user calls it: .train()/.eval(), in whatever grad mode the caller is in (the
        document's class reads torch.is_grad_enabled(), which is what BN-MODE-SWITCH asks about)."""
        torch = self.torch
        self.m.train(training)
        with torch.set_grad_enabled(grad_enabled):
            y = self.m(torch.as_tensor(x))
        self.m.moving_mean, self.m.moving_var = self.m.moving_mean.detach(), self.m.moving_var.detach()
        return {"y": y.detach().numpy().copy()}

    def running_stats(self):
        return self.m.moving_mean.numpy().reshape(-1).copy(), self.m.moving_var.numpy().reshape(-1).copy()

    def counter(self):
        return None


def implementations():
    def versions():
        import torch
        return {"torch": torch.__version__, "source": SOURCE_DOCUMENT}
    fn_caps = default_capabilities(ranks=(2, 4), feature_axes=("first",), dtypes=("float32", "float64"),
                                   default_eps=False, default_momentum=False, default_init=False, affine_off=False,
                                   second_grads=True)
    mod_caps = default_capabilities(ranks=(2, 4), feature_axes=("first",), dtypes=("float32", "float64"),
                                    explicit_momentum=False, affine_off=False, grads=False, ambient_grad_mode=True,
                                    saved_state=True)
    out = []
    for repaired in (False, True):
        tag = "[repaired]" if repaired else "[as written]"
        out.append(Implementation(f"snippet.004.batch_norm{tag}", CLAIMED_PROFILE, fn_caps,
                                  lambda p, d, r=repaired: _FunctionInstance(p, r), versions, lambda: ["cpu"],
                                  "snippets"))
        out.append(Implementation(f"snippet.004.batchNorm{tag}", CLAIMED_PROFILE, mod_caps,
                                  lambda p, d, r=repaired: _ModuleInstance(p, r), versions, lambda: ["cpu"],
                                  "snippets"))
    return out

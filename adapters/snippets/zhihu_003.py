"""Specimen from seeds/003 (English translation of a Chinese post "Batch normalization",
LeNet with a hand-written BatchNorm): `batch_norm(is_training, X, eps, gamma, beta,
running_mean, running_var, alpha)` and its `BatchNorm(nn.Module)`.

The document writes PyTorch and compares with nn.BatchNorm2d/1d, so it is audited under the
`torch` profile. The seed text lost its line breaks; they and the indentation are restored,
every token is kept. Conventions as written: alpha (momentum 0.9 in the module) weights the
NEW batch (running = alpha*mean + (1-alpha)*running), running_var initialised to ZEROS,
the convolution branch initialises beta to ONES, biased running variance, inputs of rank
2 or 4 only.
"""
from .._protocol import Implementation, Unsupported, default_capabilities
from ..torch_bn import reload_into
from .torch_specimen import CallerHeldState, float64_dtypes, prepare_module, second_backward

SOURCE_DOCUMENT = "seeds/003 (Batch normalization, LeNet example)"
CLAIMED_PROFILE = "torch"

# ----------------------------------------------------------------- as written
import torch  # noqa: E402
from torch import nn  # noqa: E402


def batch_norm(is_training,X,eps,gamma,beta,running_mean,running_var,alpha):
    assert len(X.shape) in (2,4)
    if is_training:
        #X [batch,n]
        if len(X.shape) == 2:
            mean = X.mean(dim=0)
            var = ((X-mean) ** 2).mean(dim=0)
        else:
            #X [batch,c,h,w]
            mean = X.mean(dim=0,keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)
            var = ((X-mean) ** 2).mean(dim=0,keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)
        X_hat = (X - mean) / torch.sqrt(var + eps)
        running_mean = alpha * mean + (1 - alpha) * running_mean
        running_var = alpha * var + (1 - alpha) * running_var
    else:
        X_hat = (X - running_mean) / torch.sqrt(running_var + eps)
    #print(gamma.shape,X_hat.shape,beta.shape)
    Y = gamma * X_hat + beta
    #
    return Y,running_mean,running_var


class BatchNorm(nn.Module):
    def __init__(self,is_conv,in_channels):
        super(BatchNorm,self).__init__()
        #Linear transformation parameters after convolution layer / full connection layer normalization
        if not is_conv:
            # x:[batch,n]
            shape = (1,in_channels)
            self.gamma = nn.Parameter(torch.ones(shape)) #It is a learnable parameter. It needs to be updated according to the gradient
            self.beta = nn.Parameter(torch.zeros(shape)) #It is a learnable parameter. It needs to be updated according to the gradient
            self.running_mean = torch.zeros(shape) #No gradient is needed. Update at forward
            self.running_var = torch.zeros(shape) #No gradient is needed. Update at forward
        else:
            # x:[btach,c,h,w]
            shape = (1,in_channels,1,1)
            self.gamma = nn.Parameter(torch.ones(shape))
            self.beta = nn.Parameter(torch.ones(shape))
            self.running_mean = torch.zeros(shape)
            self.running_var = torch.zeros(shape)
        self.eps = 1e-5
        self.momentum=0.9
    def forward(self,x):
        # If X is not in memory, copy moving'mean and moving'var to the memory where X is located
        if self.running_mean.device != x.device:
            self.running_mean = self.running_mean.to(x.device)
            self.running_var = self.running_var.to(x.device)
        # self.training inherits from nn.Module, the default is true, and the call to. eval() will be set to false
        if self.training:
            Y,self.running_mean,self.running_var = batch_norm(True,x,self.eps,self.gamma,self.beta,self.running_mean,self.running_var,self.momentum)
        else:
            Y,self.running_mean,self.running_var = batch_norm(False,x,self.eps,self.gamma,self.beta,self.running_mean,self.running_var,self.momentum)
        return Y
# ----------------------------------------------------------------- end of the document's code


def _np(t):
    return t.detach().numpy().copy()


class _FunctionInstance(CallerHeldState):
    """batch_norm(...) called as the module calls it, with caller-held state (0/1 init), in
    whatever grad mode the caller is in (the function takes the mode as an argument)."""
    takes = "eps and alpha"
    switches_grad_mode = False

    def call(self, xt, training):
        return batch_norm(training, xt, float(self.p["eps"]), self.gamma, self.beta, self.mm, self.mv,
                          float(self.p["momentum"]))


class _ModuleInstance:
    """BatchNorm(is_conv, in_channels) as written: its own eps 1e-5 and momentum 0.9."""

    def __init__(self, params):
        if params["momentum"] != "default" or params["eps"] != "default":
            raise Unsupported("the module fixes eps=1e-5 and momentum=0.9 itself")
        self.p = params
        self.m = self._build(params)

    @staticmethod
    def _build(params):
        return prepare_module(BatchNorm(is_conv=params["rank"] == 4, in_channels=params["num_features"]), params,
                              ("running_mean", "running_var"))

    def reload(self):
        self.m = reload_into(self.m, self._build(dict(self.p, affine="default")))

    def to_float64(self):
        self.m, dtypes = float64_dtypes(self.m, ("running_mean", "running_var"))
        return dtypes

    def forward(self, x, training, dy):
        self.m.train(training)
        xt = torch.as_tensor(x).requires_grad_(dy is not None)
        self.m.zero_grad(set_to_none=True)
        y = self.m(xt)
        out = {"y": _np(y), "y_dtype": str(y.dtype).replace("torch.", "")}
        if dy is not None:
            (y * torch.as_tensor(dy)).sum().backward()
            out.update(dx=xt.grad.numpy().copy(), dweight=_np(self.m.gamma.grad).reshape(-1),
                       dbias=_np(self.m.beta.grad).reshape(-1))
        self.m.running_mean = self.m.running_mean.detach()
        self.m.running_var = self.m.running_var.detach()
        return out

    def grad_grad(self, x, dy, v):
        self.m.train(True)
        out = second_backward(self.m, x, dy, v, self.m.gamma)
        self.m.running_mean = self.m.running_mean.detach()
        self.m.running_var = self.m.running_var.detach()
        return out

    def forward_under(self, x, training, grad_enabled):
        """As a user calls it: .train()/.eval(), in whatever grad mode the caller is in."""
        self.m.train(training)
        with torch.set_grad_enabled(grad_enabled):
            y = self.m(torch.as_tensor(x))
        self.m.running_mean = self.m.running_mean.detach()
        self.m.running_var = self.m.running_var.detach()
        return {"y": _np(y)}

    def running_stats(self):
        return _np(self.m.running_mean).reshape(-1), _np(self.m.running_var).reshape(-1)

    def counter(self):
        return None


def implementations():
    fn_caps = default_capabilities(ranks=(2, 4), feature_axes=("first",), dtypes=("float32", "float64"),
                                   default_eps=False, default_momentum=False, default_init=False, affine_off=False,
                                   second_grads=True)
    mod_caps = default_capabilities(ranks=(2, 4), feature_axes=("first",), dtypes=("float32", "float64"),
                                    explicit_momentum=False, affine_off=False, ambient_grad_mode=True,
                                    saved_state=True, second_grads=True)
    v = lambda: {"torch": torch.__version__, "source": SOURCE_DOCUMENT}  # noqa: E731
    return [
        Implementation("snippet.003.batch_norm", CLAIMED_PROFILE, fn_caps, lambda p, d: _FunctionInstance(p), v,
                       lambda: ["cpu"], "snippets"),
        Implementation("snippet.003.BatchNorm", CLAIMED_PROFILE, mod_caps, lambda p, d: _ModuleInstance(p), v,
                       lambda: ["cpu"], "snippets"),
    ]

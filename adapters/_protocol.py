"""What an adapter provides. NumPy only, and no import of bnconf: adapters know their
framework and nothing about the spec, and reproducers embed this file verbatim."""
from dataclasses import dataclass

import numpy as np


class Unsupported(Exception):
    """The implementation cannot do what the case asks (a capability it lacks)."""


class Implementation:
    """One public BN entry point, e.g. torch.nn.BatchNorm2d.

    name: its public dotted path (Keras backend in brackets); profile: the convention
    family it claims; capabilities: what it can be asked to do (see README, 'Adapters').
    build(params, device) returns an instance with forward(x, training, dy) -> dict(y, y_dtype,
    dx, dweight, dbias), running_stats() -> (mean, var) | None and counter() -> int | None.
    """

    def __init__(self, name, profile, capabilities, build, versions, devices, family):
        self.name, self.profile, self.capabilities = name, profile, capabilities
        self.build, self.versions, self.devices, self.family = build, versions, devices, family


@dataclass(frozen=True)
class Capabilities:
    """What one implementation can be asked to do; each default here is the only one.
    A clause that `needs` a capability the implementation lacks is `unsupported`, never run."""
    ranks: tuple = (2, 3, 4, 5)
    feature_axes: tuple = ("first", "last")
    layouts: tuple = ()                # names of the layouts in scope (NC, NCHW, NHWC, ...); empty:
                                       # every rank above crossed with every feature axis
    dtypes: tuple = ("float16", "bfloat16", "float32", "float64")
    grads: bool = True                 # dx, dweight, dbias from a backward pass
    running_stats: bool = True
    momentum_none: bool = False        # momentum=None: a cumulative average (torch)
    no_running_stats: bool = False     # track_running_stats=False: batch statistics in eval too
    affine_off: bool = True            # no gamma/beta at all
    default_init: bool = True          # the framework's own gamma/beta/running-statistics init
    channels_last_memory: bool = False
    default_eps: bool = True           # can be called without an eps
    default_momentum: bool = True      # can be called without a momentum
    explicit_momentum: bool = True     # can be given a momentum
    empty_batch: bool = True           # a batch of zero rows reaches the kernel
    eval_without_stats: bool = True    # eval without running statistics (F.batch_norm cannot)
    eval_batch_stats: bool = False     # an eval-mode call that normalizes with batch statistics
    ambient_grad_mode: bool = False    # instance.forward_under(x, training, grad_enabled) -> dict(y):
                                       # the layer in its own mode, with gradient recording on or off
    saved_state: bool = False          # instance.reload(): save the layer's state the framework's way and
                                       # continue with a fresh layer that loaded it; instance.to_float64():
                                       # convert it the framework's way -> {param_dtype, stats_dtype}
    second_grads: bool = False         # instance.grad_grad(x, dy, v) -> dict(ddx, ddweight, ddy): in training,
                                       # with L = sum(dy * y) and dx = dL/dx, the gradients of sum(v * dx)
                                       # with respect to x, gamma and dy (a second backward pass)
    freeze: bool = False               # instance.freeze(): freeze the layer the framework's way
                                       # (Keras trainable = False, torch requires_grad_(False))
    reset_stats: bool = False          # instance.reset_stats(): the framework's reset of the running
                                       # statistics (torch reset_running_stats())
    mask: bool = False                 # instance.forward_masked(x, mask, training) -> dict(y): mask is a
                                       # boolean array broadcastable to x (feature axis of size 1), True
                                       # where a position counts
    renorm: bool = False               # build(params) with params["renorm"] = {rmin, rmax, dmax, momentum}:
                                       # batch renormalization; instance.renorm_stats() -> (mean, std)
    layout_pool: int = 0               # > 0: shapes come from a per-run pool of this many per
                                       # dtype (each new shape is a compile for a JIT framework)


def default_capabilities(**over) -> Capabilities:
    return Capabilities(**over)


@dataclass(frozen=True)
class SyncCapabilities:
    """What a data-parallel wrapper can be asked to do: replica counts, ragged per-replica
    batches, masks, a replica with no rows, and whether it synchronizes at all."""
    replicas: tuple = (2, 8)           # the fewest and the most replicas
    ragged: bool = False               # replicas with different batch sizes
    mask: bool = False                 # rows masked out of the statistics
    empty_replica: bool = False
    ranks: tuple = (2, 4)
    feature_axes: tuple = ("last",)
    dtypes: tuple = ("float32",)
    default_init: bool = True
    synchronized: bool = True          # statistics over all replicas (False: per replica)
    local_statistics: bool = False     # can be asked for per-replica statistics on purpose
    running_stats: bool = True
    grads: bool = True
    layout_pool: int = 0


def sync_capabilities(**over) -> SyncCapabilities:
    return SyncCapabilities(**over)


def np_out(a, dtype_name=None):
    """A framework result as (float array, dtype name); bfloat16 travels as float32."""
    arr = np.asarray(a)
    name = dtype_name or str(arr.dtype)
    if name == "bfloat16":
        arr = arr.astype(np.float32)
    return arr, name


class SyncImplementation:
    """One BN layer under one data-parallel wrapper, e.g. flax.linen.BatchNorm under pmap.

    run(params, inputs, device) performs one training step on params["replicas"] replicas:
    inputs["x"][r], inputs["dy"][r] are replica r's arrays (inputs["mask"][r] its mask when
    the case is masked), and the loss is sum_r sum(dy[r] * y[r]). It returns
    dict(replicas=[dict(y, dx, running_mean, running_var) per replica], dweight, dbias
    (summed over replicas), y_dtype, state_dtype). It raises Unsupported when the engine
    refuses the configuration outright, with the engine's own message.
    """
    sync = True

    def __init__(self, name, profile, capabilities, run, versions, devices, family):
        self.name, self.profile, self.capabilities = name, profile, capabilities
        self.run, self.versions, self.devices, self.family = run, versions, devices, family

"""What an adapter provides. NumPy only, and no import of bnconf: adapters know their
framework and nothing about the spec, and reproducers embed this file verbatim."""
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


def default_capabilities(**over):
    caps = dict(ranks=(2, 3, 4, 5), feature_axes=("first", "last"), dtypes=("float16", "bfloat16", "float32", "float64"),
                grads=True, running_stats=True, momentum_none=False, no_running_stats=False,
                affine_off=True, default_init=True, channels_last_memory=False, default_eps=True,
                default_momentum=True, explicit_momentum=True, empty_batch=True, eval_without_stats=True)
    caps.update(over)
    return caps


def sync_capabilities(**over):
    """What a data-parallel wrapper can be asked to do: replica counts, ragged per-replica
    batches, masks, a replica with no rows, and whether it synchronizes at all."""
    caps = dict(replicas=(2, 8), ragged=False, mask=False, empty_replica=False, ranks=(2, 4),
                feature_axes=("last",), dtypes=("float32",), default_init=True, synchronized=True,
                local_statistics=False, running_stats=True, grads=True)
    caps.update(over)
    return caps


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

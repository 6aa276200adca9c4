"""TensorFlow data-parallel BN: keras.layers.BatchNormalization(synchronized=True) and the
unsynchronized layer, under tf.distribute.MirroredStrategy on logical CPU devices (set up
here before TensorFlow initializes: each implementation runs in its own process).

Each replica gets its own batch (ragged: sizes may differ) through
experimental_distribute_values_from_function; the step runs in strategy.run under one
tf.function; gradients are each replica's tape.gradient of its own loss sum(dy * y).
Running statistics are read from every replica's copy of the mirrored variables.
"""
import os

import numpy as np

from ._protocol import SyncImplementation, Unsupported, sync_capabilities

FAMILY = "distributed"
DEVICES = 8
_STATE = {}


def _tf():
    if "tf" not in _STATE:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)
        except RuntimeError:
            pass   # already initialized by an earlier call in this process
        _STATE["tf"] = tf
    return _STATE["tf"]


def _strategy(R):
    tf = _tf()
    if R not in _STATE.setdefault("strategies", {}):
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(cpus) < R:
            raise Unsupported(f"{R} replicas need {R} logical CPU devices; TensorFlow has {len(cpus)}")
        # One process holds strategies of several sizes: collective all-reduces would reuse
        # group keys across them (TF aborts: "joining a group with size 3, but that group has
        # size 8"), so the replicas reduce through one device instead.
        _STATE["strategies"][R] = tf.distribute.MirroredStrategy(
            devices=cpus[:R], cross_device_ops=tf.distribute.ReductionToOneDevice())
    return _STATE["strategies"][R]


def _run(synchronized):
    def run(params, inputs, device):
        tf = _tf()
        import keras
        R = params["replicas"]
        strategy = _strategy(R)
        dt = params["dtype"]
        with strategy.scope():
            layer = keras.layers.BatchNormalization(axis=-1, momentum=float(params["momentum"]),
                                                    epsilon=float(params["eps"]), synchronized=synchronized,
                                                    dtype=dt)
            layer.build((None,) + tuple(inputs["x"][0].shape[1:]))
            if params["weight"] is not None:
                layer.gamma.assign(np.asarray(params["weight"], dt))
                layer.beta.assign(np.asarray(params["bias"], dt))
        xs = [tf.constant(a) for a in inputs["x"]]
        dys = [tf.constant(a) for a in inputs["dy"]]
        # Keras masks have the input's shape without the channel axis.
        masks = None if inputs["mask"] is None else [tf.constant(np.asarray(m)[..., 0]) for m in inputs["mask"]]

        def per_replica(values):
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: values[ctx.replica_id_in_sync_group])

        def step(x, dy, mask):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True, mask=mask)
                loss = tf.reduce_sum(y * dy)
            dx, dg, db = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
            return y, dx, dg, db

        @tf.function
        def distributed(x, dy, mask):
            return strategy.run(step, args=(x, dy, mask))

        out = distributed(per_replica(xs), per_replica(dys), per_replica(masks) if masks is not None else None)
        y, dx, dg, db = (strategy.experimental_local_results(o) for o in out)
        _STATE["variable_type"] = type(layer.moving_mean.value).__name__
        rm = strategy.experimental_local_results(layer.moving_mean.value)
        rv = strategy.experimental_local_results(layer.moving_variance.value)
        reps = [{"y": yy.numpy(), "dx": d.numpy(), "running_mean": m.numpy().reshape(-1),
                 "running_var": v.numpy().reshape(-1)} for yy, d, m, v in zip(y, dx, rm, rv)]
        return {"replicas": reps, "dweight": np.sum([g.numpy() for g in dg], axis=0),
                "dbias": np.sum([b.numpy() for b in db], axis=0), "y_dtype": str(y[0].dtype.name),
                "state_dtype": str(rm[0].dtype.name)}
    return run


def versions():
    tf = _tf()
    import keras
    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def devices():
    return ["cpu"]


def implementations():
    common = dict(ragged=True, mask=True, empty_replica=False, dtypes=("float32", "float64"), default_init=False)
    return [
        SyncImplementation("keras.layers.BatchNormalization[synchronized=True][MirroredStrategy]", "keras",
                           sync_capabilities(**common), _run(True), versions, devices, FAMILY),
        SyncImplementation("keras.layers.BatchNormalization[MirroredStrategy]", "keras",
                           sync_capabilities(synchronized=False, local_statistics=True, **common), _run(False), versions,
                           devices, FAMILY),
    ]

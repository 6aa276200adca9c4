"""JAX data-parallel BN: flax.linen.BatchNorm and flax.nnx.BatchNorm (axis_name, mask) and
haiku.BatchNorm (cross_replica_axis), under pmap, shard_map and sharded jit, on several
CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count, set here before jax is
imported: each implementation runs in its own process).

One training step per call: each replica differentiates its own loss sum(dy * y); the
collective's transpose carries the other replicas' terms into dx. Parameter gradients are
each replica's own contribution, summed here (what a data-parallel optimizer all-reduces).
Under sharded jit the layer has no axis name: XLA's partitioner inserts the collectives.
"""
import os
import sys

import numpy as np

from ._protocol import SyncImplementation, Unsupported, sync_capabilities

FAMILY = "distributed"
# XLA compiles a program per per-device shape: cases take their frames from a per-run pool
# of this many per dtype and split kind (strategies.sync_layout_pool)
LAYOUT_POOL = 4
DEVICES = 8
AXIS = "r"


def _jax():
    if "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={DEVICES}".strip()
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax


def _cpus(R):
    jax = _jax()
    devs = jax.devices("cpu")
    if len(devs) < R:
        raise Unsupported(f"{R} replicas need {R} CPU devices; jax sees {len(devs)} (jax was imported before "
                          f"XLA_FLAGS could set --xla_force_host_platform_device_count={DEVICES})")
    return devs[:R]


# ------------------------------------------------------------------ layers, functional
# Each layer function returns (initial params, initial state, apply(prm, state, x, mask, hyper),
# paths). eps and momentum arrive in `hyper` as traced, weakly typed scalars (see jax_bn.py),
# so one compiled program per per-device shape serves every value; programs are cached.
_CACHE: dict = {}


def _cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def _init(key, make):
    return _cached(("init",) + key, lambda: _jax().jit(make)())


def _linen(params, axis_name):
    import flax.linen as nn
    import jax.numpy as jnp
    dt = params["dtype"]
    v = _init(("linen", dt, params["num_features"]), lambda: nn.BatchNorm(use_running_average=False, axis=-1,
                                                                          param_dtype=dt).init(
        _jax().random.PRNGKey(0), jnp.zeros((2, params["num_features"]), dt)))   # same variables, no collective
    prm, state = dict(v["params"]), v["batch_stats"]
    if params["weight"] is not None:
        prm = {"scale": np.asarray(params["weight"], dt), "bias": np.asarray(params["bias"], dt)}

    def apply(prm, state, x, mask, hyper):
        layer = nn.BatchNorm(use_running_average=False, axis=-1, momentum=hyper["momentum"],
                             epsilon=hyper["eps"], axis_name=axis_name, param_dtype=dt)
        kw = {} if mask is None else {"mask": mask}
        y, upd = layer.apply({"params": prm, "batch_stats": state}, x, mutable=["batch_stats"], **kw)
        return y, upd["batch_stats"]
    return prm, state, apply, (lambda g: g["scale"], lambda g: g["bias"]), (lambda s: s["mean"], lambda s: s["var"])


def _nnx(params, axis_name):
    from flax import nnx
    dt = params["dtype"]

    def build():
        m = nnx.BatchNorm(params["num_features"], axis=-1, axis_name=axis_name, param_dtype=dt, rngs=nnx.Rngs(0))
        graphdef, p_tmpl, s_tmpl = nnx.split(m, nnx.Param, nnx.BatchStat)
        return graphdef, p_tmpl, s_tmpl
    graphdef, p_tmpl, s_tmpl = _cached(("nnx", dt, params["num_features"], axis_name), build)
    prm, state = p_tmpl.to_pure_dict(), s_tmpl.to_pure_dict()
    if params["weight"] is not None:
        prm = {"scale": np.asarray(params["weight"], dt), "bias": np.asarray(params["bias"], dt)}

    def apply(prm, state, x, mask, hyper):
        jax = _jax()
        ps, ss = jax.tree.map(lambda a: a, p_tmpl), jax.tree.map(lambda a: a, s_tmpl)   # fresh Variables here
        nnx.replace_by_pure_dict(ps, prm)
        nnx.replace_by_pure_dict(ss, state)
        mod = nnx.merge(graphdef, ps, ss)
        mod.momentum, mod.epsilon = hyper["momentum"], hyper["eps"]   # the attributes __call__ reads
        y = mod(x, mask=mask)
        return y, nnx.state(mod, nnx.BatchStat).to_pure_dict()
    return prm, state, apply, (lambda g: g["scale"], lambda g: g["bias"]), (lambda s: s["mean"], lambda s: s["var"])


def _haiku(params, axis_name):
    import haiku as hk
    import jax.numpy as jnp
    dt = params["dtype"]

    def body(x, hyper):
        return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=hyper["momentum"],
                            eps=hyper["eps"], cross_replica_axis=axis_name,
                            data_format="channels_last")(x, is_training=True)
    f = hk.transform_with_state(body)
    probe = hk.transform_with_state(lambda x: hk.BatchNorm(True, True, 0.9, data_format="channels_last")(
        x, is_training=True))
    shape = [2] * params["rank"]
    shape[-1] = params["num_features"]
    prm, state = _init(("haiku", dt, tuple(shape)), lambda: probe.init(_jax().random.PRNGKey(0),
                                                                       jnp.zeros(shape, dt)))
    mod = next(iter(prm))
    if params["weight"] is not None:
        shp = prm[mod]["scale"].shape
        prm = {mod: {"scale": np.asarray(params["weight"], dt).reshape(shp),
                     "offset": np.asarray(params["bias"], dt).reshape(shp)}}

    def apply(prm, state, x, mask, hyper):
        y, st = f.apply(prm, state, None, x, hyper)
        return y, st

    def stat(kind):
        return lambda s: next(v for k, v in s.items() if k.endswith(kind))["average"]
    return (prm, state, apply, (lambda g: g[mod]["scale"], lambda g: g[mod]["offset"]),
            (stat("mean_ema"), stat("var_ema")))


LAYERS = {"flax.linen.BatchNorm": _linen, "flax.nnx.BatchNorm": _nnx, "haiku.BatchNorm": _haiku}


def _step(apply):
    jax = _jax()
    import jax.numpy as jnp

    def step(prm, state, x, dy, mask, hyper):
        def loss(prm, x, state):   # state passed in, not closed over: nnx mutates it in this trace
            y, new_state = apply(prm, state, x, mask, hyper)
            return jnp.sum(y * dy), (y, new_state)
        (_, (y, new_state)), (gp, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(prm, x, state)
        return y, gx, gp, new_state
    return step


def _hyper(params):
    return {"momentum": float(params["momentum"]), "eps": float(params["eps"])}


def _key(layer, wrapper, params, axis_name):
    return (layer, wrapper, params["replicas"], params["dtype"], params["num_features"], params["rank"], axis_name)


def _answer(ys, gxs, gp_sum, stats, paths, dtype_y):
    """stats: per replica (running mean, running var) arrays."""
    wpath, bpath = paths[0]
    reps = [{"y": np.asarray(y), "dx": np.asarray(gx), "running_mean": np.asarray(m).reshape(-1),
             "running_var": np.asarray(v).reshape(-1)} for y, gx, (m, v) in zip(ys, gxs, stats)]
    return {"replicas": reps, "dweight": np.asarray(wpath(gp_sum)).reshape(-1),
            "dbias": np.asarray(bpath(gp_sum)).reshape(-1), "y_dtype": dtype_y,
            "state_dtype": str(np.asarray(stats[0][0]).dtype)}


def _split_rows(a, inputs):
    """A global (concatenated) batch back into the replicas' row blocks."""
    rows = np.cumsum([0] + [len(x) for x in inputs["x"]])
    a = np.asarray(a)
    return [a[rows[r]:rows[r + 1]] for r in range(len(inputs["x"]))]


def _stacked_stats(st, paths, R):
    """Per-replica (mean, var) from state stacked along a leading replica axis."""
    mpath, vpath = paths[1]
    return [(np.asarray(mpath(st))[r], np.asarray(vpath(st))[r]) for r in range(R)]


def _summed(gp):
    return _jax().tree.map(lambda a: np.asarray(a).sum(axis=0), gp)


def _stack(tree, R):
    return _jax().tree.map(lambda a: np.stack([np.asarray(a)] * R), tree)


def _quiet(run):
    """Framework FutureWarnings (e.g. flax's float32 batch_stats updated in float64) are not
    results; they are kept out of the audit's output."""
    def wrapped(params, inputs, device):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run(params, inputs, device)
    return wrapped


def _run_pmap(layer):
    @_quiet
    def run(params, inputs, device):
        jax = _jax()
        R = params["replicas"]
        prm, state, apply, *paths = LAYERS[layer](params, AXIS)
        f = _cached(_key(layer, "pmap", params, AXIS),
                    lambda: jax.pmap(_step(apply), axis_name=AXIS, devices=_cpus(R), in_axes=(0, 0, 0, 0, 0, None)))
        x, dy = np.stack(inputs["x"]), np.stack(inputs["dy"])
        mask = None if inputs["mask"] is None else np.stack(inputs["mask"])
        y, gx, gp, st = f(_stack(prm, R), _stack(state, R), x, dy, mask, _hyper(params))
        return _answer(list(np.asarray(y)), list(np.asarray(gx)), _summed(gp), _stacked_stats(st, paths, R), paths,
                       str(y.dtype))
    return run


def _run_shard_map(layer):
    @_quiet
    def run(params, inputs, device):
        jax = _jax()
        from jax.sharding import Mesh, PartitionSpec as P
        R = params["replicas"]
        prm, state, apply, *paths = LAYERS[layer](params, AXIS)

        def make():
            mesh = Mesh(np.array(_cpus(R)), (AXIS,))
            step = _step(apply)

            def per_shard(prm, state, x, dy, mask, hyper):
                sq = lambda t: jax.tree.map(lambda a: a[0], t)          # noqa: E731
                ex = lambda t: jax.tree.map(lambda a: a[None], t)       # noqa: E731
                y, gx, gp, st = step(sq(prm), sq(state), x, dy, mask, hyper)
                return y, gx, ex(gp), ex(st)
            return jax.jit(jax.shard_map(per_shard, mesh=mesh, in_specs=(P(AXIS),) * 5 + (P(),),
                                         out_specs=P(AXIS)))
        f = _cached(_key(layer, "shard_map", params, AXIS), make)
        x, dy = np.concatenate(inputs["x"]), np.concatenate(inputs["dy"])
        mask = None if inputs["mask"] is None else np.concatenate(inputs["mask"])
        y, gx, gp, st = f(_stack(prm, R), _stack(state, R), x, dy, mask, _hyper(params))
        return _answer(_split_rows(y, inputs), _split_rows(gx, inputs), _summed(gp), _stacked_stats(st, paths, R),
                       paths, str(y.dtype))
    return run


def _run_jit(layer):
    """Sharded jit: the global batch split over R devices along the batch axis; no axis_name.
    Each device's copy of the (replicated) running statistics is read back separately."""
    @_quiet
    def run(params, inputs, device):
        jax = _jax()
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        R = params["replicas"]
        prm, state, apply, *paths = LAYERS[layer](params, None)
        mesh = _cached(("mesh", R), lambda: Mesh(np.array(_cpus(R)), (AXIS,)))
        batch = NamedSharding(mesh, P(AXIS))
        put = lambda a: None if a is None else jax.device_put(a, batch)    # noqa: E731
        x, dy = put(np.concatenate(inputs["x"])), put(np.concatenate(inputs["dy"]))
        mask = None if inputs["mask"] is None else put(np.concatenate(inputs["mask"]))
        repl = NamedSharding(mesh, P())
        prm_d = jax.device_put(prm, repl)
        state_d = jax.device_put(state, repl)
        f = _cached(_key(layer, "jit", params, None), lambda: jax.jit(_step(apply)))
        y, gx, gp, st = f(prm_d, state_d, x, dy, mask, _hyper(params))
        mpath, vpath = paths[1]

        def on(arr, dev):
            return next(s.data for s in arr.addressable_shards if s.device == dev)
        stats = [(on(mpath(st), dev), on(vpath(st), dev)) for dev in mesh.devices.flat]
        return _answer(_split_rows(y, inputs), _split_rows(gx, inputs), gp, stats, paths, str(y.dtype))
    return run


def versions():
    jax = _jax()
    import flax
    out = {"jax": jax.__version__, "flax": flax.__version__}
    try:
        import haiku
        out["dm-haiku"] = haiku.__version__
    except ImportError:
        pass
    return out


def devices():
    return ["cpu"]   # one replica per device: a single GPU cannot hold two JAX replicas


def implementations():
    rows = []
    for layer in ("flax.linen.BatchNorm", "flax.nnx.BatchNorm"):
        for wrapper, run in (("pmap", _run_pmap), ("shard_map", _run_shard_map), ("jit-sharded", _run_jit)):
            if layer == "flax.nnx.BatchNorm" and wrapper == "pmap":
                continue   # nnx modules are stateful objects; shard_map and jit are its data-parallel paths
            caps = sync_capabilities(mask=True, dtypes=("float32", "float64"), default_init=False,
                                     layout_pool=LAYOUT_POOL)
            rows.append(SyncImplementation(f"{layer}[{wrapper}]", "flax", caps, run(layer), versions, devices, FAMILY))
    rows.append(SyncImplementation("haiku.BatchNorm[pmap]", "haiku",
                                   sync_capabilities(dtypes=("float32", "float64"), default_init=False,
                                                     layout_pool=LAYOUT_POOL),
                                   _run_pmap("haiku.BatchNorm"), versions, devices, FAMILY))
    return rows

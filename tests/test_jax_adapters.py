"""The JAX adapters pass eps and momentum into compiled programs as traced arguments (one
program per layout instead of one per value). That is only honest if the results are bit
for bit those of the layer built the way a user builds it, with Python floats: checked here
for every JAX library, dtype and a few awkward values, over two training steps and eval."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("haiku")
pytest.importorskip("equinox")

from bnconf.adapters import jax_bn  # noqa: E402
from bnconf.running.registry import find  # noqa: E402

jax_bn._jax()   # x64 on, as in the adapters, before any layer is built

VALUES = [(0.37, 0.0123), (0.123456789, 3.3e-7), (0.9, 1e-5)]
DTYPES = ["float32", "float64", "bfloat16"]


def _params(dtype, mom, eps, fa=1, C=3):
    return {"num_features": C, "feature_axis": fa, "rank": 3, "dtype": dtype, "momentum": mom, "eps": eps,
            "affine": "default", "weight": None, "bias": None, "track_running_stats": True,
            "memory_format": "contiguous"}


def _x(dtype, fa=1, seed=0):
    shape = (6, 3, 4) if fa == 1 else (6, 4, 3)
    x = np.random.default_rng(seed).normal(2.0, 3.0, shape).astype(np.float32)
    return jax_bn._arr(x, dtype)


def _linen(dtype, mom, eps):
    import flax.linen as nn
    pd = jax_bn._param_dtype(dtype)
    bn = nn.BatchNorm(use_running_average=None, axis=1, momentum=mom, epsilon=eps, dtype=dtype, param_dtype=pd)
    v = bn.init(jax.random.PRNGKey(0), _x(dtype), use_running_average=False)
    step = jax.jit(lambda v, x: bn.apply(v, x, use_running_average=False, mutable=["batch_stats"]))
    ys = []
    for s in range(2):
        y, upd = step(v, _x(dtype, seed=s))
        v = {"params": v["params"], "batch_stats": upd["batch_stats"]}
        ys.append(y)
    ys.append(jax.jit(lambda v, x: bn.apply(v, x, use_running_average=True))(v, _x(dtype, seed=5)))
    return ys, (v["batch_stats"]["mean"], v["batch_stats"]["var"])


def _haiku(dtype, mom, eps):
    import haiku as hk
    f = hk.transform_with_state(lambda x, t: hk.BatchNorm(True, True, mom, eps=eps, data_format="channels_first")(
        x, t))
    prm, st = f.init(jax.random.PRNGKey(0), _x(dtype), True)
    step = jax.jit(f.apply, static_argnums=4)
    ys = []
    for s in range(2):
        y, st = step(prm, st, None, _x(dtype, seed=s), True)
        ys.append(y)
    ys.append(step(prm, st, None, _x(dtype, seed=5), False)[0])
    mean = next(v for k, v in st.items() if k.endswith("mean_ema"))["average"]
    var = next(v for k, v in st.items() if k.endswith("var_ema"))["average"]
    return ys, (mean, var)


def _stax(dtype, mom, eps):
    from jax.example_libraries import stax
    init, apply = stax.BatchNorm(axis=(0, 2), epsilon=eps)
    _, prm = init(jax.random.PRNGKey(0), (2, 3, 2))
    prm = tuple(p.astype(dtype) for p in prm)
    f = jax.jit(apply)
    return [f(prm, _x(dtype, seed=s)) for s in (0, 1, 5)], None


def _equinox(mode):
    def run(dtype, mom, eps):
        import equinox as eqx
        bn, st = eqx.nn.make_with_state(eqx.nn.BatchNorm)(3, axis_name="batch", mode=mode, momentum=mom, eps=eps,
                                                          dtype=jax_bn._param_dtype(dtype))
        f = eqx.filter_jit(lambda m, st, x: jax.vmap(m, axis_name="batch", in_axes=(0, None),
                                                     out_axes=(0, None))(x, st))
        ys = []
        for s in range(2):
            y, st = f(bn, st, _x(dtype, seed=s))
            ys.append(y)
        ys.append(f(eqx.nn.inference_mode(bn), st, _x(dtype, seed=5))[0])
        return ys, None
    return run


def _nnx(dtype, mom, eps):
    from flax import nnx
    bn = nnx.BatchNorm(3, axis=1, momentum=mom, epsilon=eps, dtype=dtype, param_dtype=jax_bn._param_dtype(dtype),
                       rngs=nnx.Rngs(0))

    @nnx.jit
    def call(m, x):
        return m(x)
    ys = []
    bn.train()
    for s in range(2):
        ys.append(call(bn, _x(dtype, seed=s)))
    bn.eval()
    ys.append(call(bn, _x(dtype, seed=5)))
    return ys, (bn.mean.value, bn.var.value)


BY_THE_BOOK = {"flax.linen.BatchNorm": _linen, "haiku.BatchNorm": _haiku,
               "jax.example_libraries.stax.BatchNorm": _stax, "flax.nnx.BatchNorm": _nnx,
               "equinox.nn.BatchNorm[mode=ema]": _equinox("ema"), "equinox.nn.BatchNorm[mode=batch]": _equinox("batch")}


@pytest.mark.parametrize("name", sorted(BY_THE_BOOK))
@pytest.mark.parametrize("dtype", DTYPES)
def test_traced_hyperparameters_are_bitwise_the_users_layer(name, dtype):
    impl = find(name)
    for mom, eps in VALUES:
        try:
            want_ys, want_stats = BY_THE_BOOK[name](dtype, mom, eps)
        except TypeError as exc:   # the library itself refuses (equinox: bfloat16 input, float32 state)
            with pytest.raises(TypeError, match=str(exc).split("(")[0][:40]):
                impl.build(_params(dtype, mom, eps), "cpu").forward(np.ones((6, 3, 4), np.float32), True, None)
            continue
        inst = impl.build(_params(dtype, mom, eps), "cpu")
        got = [inst.forward(np.asarray(jax.device_get(_x(dtype, seed=s)).astype(np.float32)), s < 2, None)["y"]
               for s in (0, 1)]
        got.append(inst.forward(np.asarray(jax.device_get(_x(dtype, seed=5)).astype(np.float32)), False, None)["y"])
        for g, w in zip(got, want_ys):
            np.testing.assert_array_equal(np.asarray(g, np.float64), np.asarray(w.astype("float32") if dtype ==
                                          "bfloat16" else w, np.float64), err_msg=f"{name} {dtype} {mom} {eps}")
        if want_stats is not None:
            rm, rv = inst.running_stats()
            np.testing.assert_array_equal(rm, np.asarray(want_stats[0], np.float64).reshape(-1))
            np.testing.assert_array_equal(rv, np.asarray(want_stats[1], np.float64).reshape(-1))

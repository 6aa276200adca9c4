"""The porting guide's weight-copying rules, applied as written to a trained PyTorch layer that
is moved to Flax, ONNX (onnxruntime) and Keras: each target's eval output must equal the
oracle's eval output on the source's stored statistics and eps within the error model's eval
bound (BN-EVAL-RUNNING). The rule the guide used to give (running_var * (n-1)/n) is the
negative control: on a batch of n = 16 values per channel it misses by far more than the bound."""
import os

import numpy as np
import pytest

from bnconf.reference import error_model, oracle
from bnconf.reference.comparison import compare
from bnconf.reference.porting import porting_guide

torch = pytest.importorskip("torch")

N, C, H, W = 4, 3, 2, 2      # n = N*H*W = 16 values per channel: (n-1)/n = 0.9375 is visible


def _apply(rule: str, value, n):
    if rule in ("copy", "the source's value"):
        return value
    if rule == "scale (n-1)/n":       # the old guide's rule, kept only as the negative control
        return value * (n - 1) / n
    raise ValueError(f"the porting guide gives a rule this test cannot apply: {rule!r}")


@pytest.fixture(scope="module")
def trained():
    """A BatchNorm2d trained for five steps on shifted, scaled batches; its weights and an eval batch."""
    torch.manual_seed(0)
    m = torch.nn.BatchNorm2d(C, eps=1e-3)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        m.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    m.train()
    for _ in range(5):
        m(torch.randn(N, C, H, W) * 2 + 1)
    m.eval()
    x = (torch.randn(N, C, H, W) * 2 + 1).numpy()
    with torch.no_grad():
        y_torch = m(torch.as_tensor(x)).numpy()
    w = {k: v.detach().numpy().astype(np.float32) for k, v in
         (("weight", m.weight), ("bias", m.bias), ("running_mean", m.running_mean), ("running_var", m.running_var))}
    return w, float(m.eps), x, y_torch


def _rules(spec, target):
    (entry,) = [p for p in porting_guide(spec) if p["from"] == "torch" and p["to"] == target]
    return entry["weights"]


def _judge(spec, trained, y, name):
    w, eps, x, _ = trained
    expected = oracle.normalize(x, w["running_mean"].reshape(1, -1, 1, 1), w["running_var"].reshape(1, -1, 1, 1), eps,
                                w["weight"], w["bias"], 1)
    model = error_model.model_for(spec.tolerance, "float32")
    bound = error_model.y_eval_bound(model, x, w["weight"], w["bias"], w["running_mean"], w["running_var"], eps, 1,
                                     error_model.unit_roundoff("float32"), expected)
    return compare(np.asarray(y, np.float64), expected, bound, f"{name} eval output after porting", key="eval/y")


def _flax(w, eps, x):
    import jax.numpy as jnp
    from flax import linen as nn
    layer = nn.BatchNorm(use_running_average=True, axis=1, epsilon=eps)
    variables = {"params": {"scale": jnp.asarray(w["weight"]), "bias": jnp.asarray(w["bias"])},
                 "batch_stats": {"mean": jnp.asarray(w["running_mean"]), "var": jnp.asarray(w["running_var"])}}
    return np.asarray(layer.apply(variables, jnp.asarray(x)))


def _onnx(w, eps, x):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(w[k], k) for k in ("weight", "bias", "running_mean", "running_var")]
    node = helper.make_node("BatchNormalization", ["x", "weight", "bias", "running_mean", "running_var"], ["y"],
                            epsilon=eps)
    graph = helper.make_graph([node], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _keras(w, eps, x):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    layer = keras.layers.BatchNormalization(axis=1, epsilon=eps)
    layer.build(x.shape)
    layer.set_weights([w["weight"], w["bias"], w["running_mean"], w["running_var"]])
    return np.asarray(layer(x, training=False))


TARGETS = {"flax": _flax, "onnx": _onnx, "keras": _keras}


@pytest.mark.clause("BN-EVAL-RUNNING")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_guide_s_weight_rules_keep_eval_outputs(spec, trained, target):
    w, eps, x, y_torch = trained
    assert _judge(spec, trained, y_torch, "torch").ok   # the source itself is within the bound
    rules = _rules(spec, target)
    n = N * H * W
    ported = dict(w, running_mean=_apply(rules["running_mean"], w["running_mean"], n),
                  running_var=_apply(rules["running_var"], w["running_var"], n))
    y = TARGETS[target](ported, _apply(rules["eps"], eps, n), x)
    cmp = _judge(spec, trained, y, target)
    assert cmp.ok, f"torch -> {target} with the guide's rules {rules}: {cmp.describe()}"


@pytest.mark.clause("BN-EVAL-RUNNING")
def test_the_old_rule_would_have_changed_every_output(spec, trained):
    w, eps, x, _ = trained
    n = N * H * W
    wrong = dict(w, running_var=_apply("scale (n-1)/n", w["running_var"], n))
    cmp = _judge(spec, trained, _onnx(wrong, eps, x), "onnx with running_var * (n-1)/n")
    assert not cmp.ok and cmp.ratio > 100, cmp.describe()

"""API facts stated by the source documents, checked against the frameworks installed now.

Each fact quotes its document, names the framework it needs, and a check measures whether
the current framework still behaves so: `holds`, `changed` (with what is observed now),
`gone` (the API no longer exists: its error), or `not_run` (the framework is not installed
in this environment). Run by `bnconf facts`; the report shows them per document.
"""
from __future__ import annotations

import inspect
import os

import numpy as np


def _torch_sig(cls_name):
    import torch
    sig = inspect.signature(getattr(torch.nn, cls_name).__init__)
    return {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}


def f000_signature(cls_name):
    def check():
        want = {"eps": 1e-05, "momentum": 0.1, "affine": True, "track_running_stats": True, "device": None,
                "dtype": None}
        got = _torch_sig(cls_name)
        diff = {k: got.get(k, "<missing>") for k in want if got.get(k, "<missing>") != want[k]}
        return ("holds", f"defaults {want}") if not diff else ("changed", f"now {diff}")
    return check


def f000_state_dict():
    import torch
    keys = list(torch.nn.BatchNorm2d(3, momentum=0.1).state_dict().keys())
    want = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    return ("holds", f"keys {keys}") if keys == want else ("changed", f"keys now {keys}")


def f000_init():
    import torch
    m = torch.nn.BatchNorm2d(3)
    ok = bool(torch.all(m.weight == 1) and torch.all(m.bias == 0))
    return ("holds" if ok else "changed", f"weight {m.weight.tolist()}, bias {m.bias.tolist()}")


def f000_momentum():
    import torch
    m = torch.nn.BatchNorm1d(2)
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    m(x)
    mean = x.mean(0)
    want = 0.9 * torch.zeros(2) + 0.1 * mean  # x_new = (1 - momentum) x_hat + momentum x_t, momentum 0.1
    ok = torch.allclose(m.running_mean, want)
    return ("holds" if ok else "changed", f"running_mean after one step {m.running_mean.tolist()} "
            f"(formula gives {want.tolist()})")


def f000_eval_uses_running():
    import torch
    m = torch.nn.BatchNorm1d(2)
    m(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    m.eval()
    x = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    y = m(x)
    want = (x - m.running_mean) / torch.sqrt(m.running_var + m.eps)
    return ("holds" if torch.allclose(y, want) else "changed", "eval normalizes with running_mean/running_var")


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    return keras


def f001_tf_layers():
    import tensorflow as tf
    try:
        fn = tf.compat.v1.layers.batch_normalization
        return "holds", f"exists: {fn}"
    except Exception as exc:
        return "gone", f"TensorFlow {tf.__version__}: {type(exc).__name__}: {str(exc)[:300]}"


def f001_defaults():
    keras = _keras()
    sig = inspect.signature(keras.layers.BatchNormalization.__init__)
    got = {k: sig.parameters[k].default for k in ("axis", "momentum", "epsilon", "center", "scale")}
    want = {"axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True}
    return ("holds" if got == want else "changed",
            f"keras.layers.BatchNormalization (Keras {keras.__version__}), the successor: {got}")


def f001_moving_average():
    keras = _keras()
    bn = keras.layers.BatchNormalization(momentum=0.9)
    x = np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)
    bn(x, training=True)
    got = np.asarray(bn.moving_mean)
    want = 0.0 * 0.9 + x.mean(0) * (1 - 0.9)  # moving_average_value * momentum + value * (1 - momentum)
    return ("holds" if np.allclose(got, want) else "changed", f"moving_mean {got.tolist()} vs formula {want.tolist()}")


def f001_training_default_false():
    keras = _keras()
    bn = keras.layers.BatchNormalization()
    x = np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)
    bn(x)  # no `training` argument
    unchanged = np.allclose(np.asarray(bn.moving_mean), 0) and np.allclose(np.asarray(bn.moving_variance), 1)
    return ("holds" if unchanged else "changed",
            "called without training=..., the moving statistics stay at 0 and 1" if unchanged else
            "called without training=..., the moving statistics changed")


def f001_update_ops():
    keras = _keras()
    import tensorflow as tf
    bn = keras.layers.BatchNormalization()
    bn(np.array([[1.0, 2.0], [3.0, 6.0]], np.float32), training=True)
    updated = not np.allclose(np.asarray(bn.moving_mean), 0)
    if updated:
        return "changed", (f"TensorFlow {tf.__version__} eager + Keras 3: training=True updates the moving "
                           "statistics at once; there are no UPDATE_OPS to add to train_op")
    return "holds", "moving statistics were not updated without update ops"


def f001_axis_4():
    keras = _keras()
    try:
        bn = keras.layers.BatchNormalization(axis=4)
        bn(np.zeros((2, 3, 3, 5), np.float32), training=True)
        return "holds", "axis=4 accepted for [batch, height, width, channel]"
    except Exception as exc:
        return "changed", (f"axis=4 on a [batch, height, width, channel] input fails: {type(exc).__name__}: "
                           f"{str(exc)[:200]}; the channel axis there is 3 (or -1)")


FACTS = [
    ("000-1", "000", "torch.nn.BatchNorm1d(num_features, eps=1e-05, momentum=0.1, affine=True, "
     "track_running_stats=True, device=None, dtype=None)", "torch", f000_signature("BatchNorm1d")),
    ("000-2", "000", "torch.nn.BatchNorm2d(num_features, eps=1e-05, momentum=0.1, affine=True, "
     "track_running_stats=True, device=None, dtype=None)", "torch", f000_signature("BatchNorm2d")),
    ("000-3", "000", "state_dict().keys(): odict_keys(['weight', 'bias', 'running_mean', 'running_var', "
     "'num_batches_tracked'])", "torch", f000_state_dict),
    ("000-4", "000", "默认初始化参数γ和β为1和0 (gamma and beta are initialised to 1 and 0)", "torch", f000_init),
    ("000-5", "000", "running stats update: x_new = (1 - momentum) * x_hat + momentum * x_t, 默认momentum为0.1",
     "torch", f000_momentum),
    ("000-6", "000", "eval模式...直接使用train模式得到的统计量running mean和running var进行归一化", "torch",
     f000_eval_uses_running),
    ("001-1", "001", "tf.layers.batch_normalization(inputs, axis=-1, momentum=0.99, epsilon=0.001, ...) "
     "is the interface to use", "tensorflow", f001_tf_layers),
    ("001-2", "001", "defaults axis=-1, momentum=0.99, epsilon=0.001, center=True, scale=True", "tensorflow",
     f001_defaults),
    ("001-3", "001", "moving_average_value * momentum + value * (1 - momentum)", "tensorflow", f001_moving_average),
    ("001-4", "001", "training 参数默认值为False: moving_mean/moving_variance are not updated unless training=True",
     "tensorflow", f001_training_default_false),
    ("001-5", "001", "update_ops must be added as dependencies of train_op or the moving statistics are not "
     "updated", "tensorflow", f001_update_ops),
    ("001-6", "001", "输入为channel_last [batch_size, height, width, channel] 时 axis 应该设定为4", "tensorflow",
     f001_axis_4),
]


def run_facts(frameworks=None) -> list[dict]:
    out = []
    for fid, doc, claim, fw, check in FACTS:
        rec = {"kind": "fact", "fact": fid, "document": doc, "claim": claim, "framework": fw}
        if frameworks and fw not in frameworks:
            continue
        try:
            __import__(fw)
        except ImportError as exc:
            out.append(dict(rec, status="not_run", observed=f"{fw} not installed here: {exc}"))
            continue
        try:
            status, observed = check()
        except Exception as exc:  # a check that breaks says so; it never stops the others
            status, observed = "error", f"{type(exc).__name__}: {exc}"
        out.append(dict(rec, status=status, observed=observed, version=__import__(fw).__version__))
    return out

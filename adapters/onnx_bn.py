"""ONNX BatchNormalization (opset 15) run by onnxruntime and by onnx.reference.

The caller owns the running statistics (inputs `input_mean`/`input_var`); training_mode=1
returns the updated ones, which this adapter feeds back, as an exporter's graph would.
No autodiff: gradients are unsupported.
"""
import os

import numpy as np

from ._protocol import Implementation, Unsupported, default_capabilities, np_out

FAMILY = "onnx"
OPSET = 15


def _onnx():
    import onnx
    return onnx


def _model(rank, dtype, stat_dtype, training, eps, momentum):
    onnx = _onnx()
    from onnx import TensorProto, helper
    T = {"float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
         "bfloat16": TensorProto.BFLOAT16}
    attrs = {"training_mode": 1 if training else 0}
    if eps != "default":
        attrs["epsilon"] = float(eps)
    if momentum != "default":
        attrs["momentum"] = float(momentum)
    outputs = ["Y", "running_mean", "running_var"] if training else ["Y"]
    node = helper.make_node("BatchNormalization", ["X", "scale", "B", "input_mean", "input_var"], outputs, **attrs)
    dims = [None] * rank
    inputs = [helper.make_tensor_value_info("X", T[dtype], dims)] + [
        helper.make_tensor_value_info(n, T[stat_dtype], [None]) for n in ("scale", "B", "input_mean", "input_var")]
    outs = [helper.make_tensor_value_info("Y", T[dtype], dims)] + [
        helper.make_tensor_value_info(n, T[stat_dtype], [None]) for n in outputs[1:]]
    graph = helper.make_graph([node], "bn", inputs, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


class _Instance:
    def __init__(self, params, runtime):
        if params["momentum"] is None:
            raise Unsupported("ONNX momentum is a float attribute")
        if params["affine"] == "off":
            raise Unsupported("ONNX BatchNormalization always takes scale and B")
        self.p, self.runtime = params, runtime
        c = params["num_features"]
        # opset 15 lets the statistics be float32 under a float16/bfloat16 X (type T1/T2)
        self.sdt = "float64" if params["dtype"] == "float64" else "float32"
        self.rm, self.rv = np.zeros(c, self.sdt), np.ones(c, self.sdt)
        if params["affine"] == "random":
            self.w, self.b = params["weight"].astype(self.sdt), params["bias"].astype(self.sdt)
        else:
            self.w, self.b = np.ones(c, self.sdt), np.zeros(c, self.sdt)
        self.sessions = {}

    def _run(self, training, feeds):
        if training not in self.sessions:
            m = _model(self.p["rank"], self.p["dtype"], self.sdt, training, self.p["eps"], self.p["momentum"])
            if self.runtime == "onnxruntime":
                import onnxruntime as ort
                so = ort.SessionOptions()
                # onnxruntime's own pool ignores OMP_NUM_THREADS; follow it (the runner sets 1 per worker)
                so.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
                so.log_severity_level = 3
                sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
                self.sessions[training] = lambda f: sess.run(None, f)
            else:
                from onnx.reference import ReferenceEvaluator
                ref = ReferenceEvaluator(m)
                self.sessions[training] = lambda f: ref.run(None, f)
        return self.sessions[training](feeds)

    def forward(self, x, training, dy):
        if self.p["dtype"] == "bfloat16":
            raise Unsupported("bfloat16 tensors are not fed through the NumPy API here")
        feeds = {"X": np.ascontiguousarray(x), "scale": self.w, "B": self.b, "input_mean": self.rm.copy(),
                 "input_var": self.rv.copy()}
        outs = self._run(training, feeds)
        if training:
            self.rm, self.rv = np.asarray(outs[1]).copy(), np.asarray(outs[2]).copy()
        y = np.asarray(outs[0])
        return dict(zip(("y", "y_dtype"), np_out(y.copy())))

    def running_stats(self):
        return self.rm.copy(), self.rv.copy()

    def counter(self):
        return None


def _versions_ort():
    import onnxruntime
    return {"onnx": _onnx().__version__, "onnxruntime": onnxruntime.__version__, "opset": OPSET}


def _versions_ref():
    return {"onnx": _onnx().__version__, "opset": OPSET}


def _devices_ort():
    import onnxruntime
    return ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else [])


def _devices_ref():
    return ["cpu"]


def _build(runtime):
    def build(params, device):
        if device != "cpu":
            raise Unsupported("this adapter runs the CPU execution provider")
        return _Instance(params, runtime)
    return build


def implementations():
    caps = default_capabilities(feature_axes=("first",), dtypes=("float16", "float32", "float64"), grads=False,
                                affine_off=False, default_init=False)
    return [
        Implementation("onnxruntime.BatchNormalization", "onnx", caps, _build("onnxruntime"), _versions_ort,
                       _devices_ort, FAMILY),
        Implementation("onnx.reference.BatchNormalization", "onnx", caps, _build("reference"), _versions_ref,
                       _devices_ref, FAMILY),
    ]

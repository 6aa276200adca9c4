"""Peer expectations: ONNX's own node test cases for BatchNormalization, regenerated at test
time from the installed onnx package (onnx/backend/test/case/node/batch_normalization.py:
inference and training_mode, opset 15), replayed on the oracle under the onnx profile at the
tolerance ONNX's backend test runner applies to them (each TestCase's rtol/atol)."""
import warnings

import numpy as np
import pytest

from expectations import replay

onnx = pytest.importorskip("onnx")
from onnx.backend.test.case import node as onnx_node_cases  # noqa: E402


def _cases():
    state = np.random.get_state()
    np.random.seed(0)   # the generators draw from numpy's global generator
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # other ops' generators overflow on purpose
            found = [c for c in onnx_node_cases.collect_testcases("BatchNormalization")
                     if any(n.op_type == "BatchNormalization" for n in c.model.graph.node)]
    finally:
        np.random.set_state(state)
    return found


def _as_case(tc) -> dict:
    """A TestCase's node, inputs and outputs in the peer-data form (tests/peers/expectations.py)."""
    (node,) = tc.model.graph.node
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    (inputs, outputs), = tc.data_sets
    x, scale, bias, mean, var = inputs
    training = bool(attrs.get("training_mode", 0))
    names = ["y", "running_mean", "running_var"][:len(outputs)]
    return {"id": tc.name, "profile": "onnx", "feature_axis": 1, "eps": float(attrs.get("epsilon", 1e-5)),
            "momentum": float(attrs.get("momentum", 0.9)), "weight": scale, "bias": bias,
            "running_mean": mean, "running_var": var,
            "steps": [{"mode": "train" if training else "eval", "x": x,
                       "expect": dict(zip(names, outputs))}],
            "tolerance": {"rtol": tc.rtol, "atol": tc.atol}}


CASES = _cases()


def test_onnx_ships_its_batchnorm_node_cases():
    """onnx 1.16-1.23 generate four: example and epsilon, each in inference and training_mode."""
    names = {c.name for c in CASES}
    assert len(CASES) >= 4 and any("training_mode" in n for n in names), names


@pytest.mark.clause("BN-NORMALIZE", "BN-EVAL-RUNNING", "BN-MOMENTUM-OLD-WEIGHT", "BN-RUNVAR-BIASED")
@pytest.mark.parametrize("tc", CASES, ids=[c.name for c in CASES])
def test_oracle_reproduces_onnx_node_case(tc, spec):
    case = _as_case(tc)
    for step, quantity, ratio, detail in replay(case, spec):
        assert ratio <= 1, f"{tc.name} {quantity}: {ratio:.3g}x ONNX's tolerance ({detail})"

"""Peer expectations: the BatchNorm eval cases ONNX ships as pytorch-converted test data
(onnx/backend/test/data/pytorch-converted/test_BatchNorm*; models exported from PyTorch's
BatchNorm1d/2d/3d with their inputs and PyTorch's outputs). The float64 oracle under the
onnx profile, given the model's own scale, bias, running statistics and epsilon, must agree
with PyTorch's outputs within the error model's eval bound (BN-NORMALIZE, BN-EPS-INSIDE)."""
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from bnconf.reference import error_model, oracle  # noqa: E402
from bnconf.reference.comparison import compare  # noqa: E402

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted"
CASES = sorted(p.name for p in DATA.glob("test_BatchNorm*")) if DATA.is_dir() else []


def test_the_peer_data_is_there():
    """Five eval cases ship with onnx 1.16-1.23 (1d 3-d input, 2d, 2d momentum, 3d, 3d momentum)."""
    assert len(CASES) >= 5, f"no pytorch-converted BatchNorm data under {DATA}"


def _case(name):
    model = onnx.load(str(DATA / name / "model.onnx"))
    (node,) = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    data = DATA / name / "test_data_set_0"
    x = numpy_helper.to_array(onnx.load_tensor(str(data / "input_0.pb")))
    y = numpy_helper.to_array(onnx.load_tensor(str(data / "output_0.pb")))
    scale, bias, mean, var = (init[i] for i in node.input[1:5])
    return x, y, scale, bias, mean, var, float(attrs.get("epsilon", 1e-5))


@pytest.mark.clause("BN-NORMALIZE", "BN-EPS-INSIDE")
@pytest.mark.parametrize("name", CASES)
def test_oracle_agrees_with_pytorch_outputs_onnx_ships(name, spec):
    x, y, scale, bias, mean, var, eps = _case(name)
    assert spec.profile("onnx").conventions["eps_placement"] == "inside_sqrt"
    per_channel = (-1,) + (1,) * (x.ndim - 2)   # channels on axis 1, as PyTorch and ONNX lay them out
    expected = oracle.normalize(x, mean.astype(np.float64).reshape(per_channel),
                                var.astype(np.float64).reshape(per_channel), eps, scale, bias, 1)
    model = error_model.model_for(spec.tolerance, str(x.dtype))
    bound = error_model.y_eval_bound(model, x, scale, bias, mean, var, eps, 1, error_model.unit_roundoff(str(y.dtype)),
                                     expected)
    cmp = compare(y, expected, bound, key=f"{name}/y")
    assert cmp.ok, f"{name}: {cmp.describe()}"


@pytest.mark.clause("BN-EPS-INSIDE")
@pytest.mark.parametrize("name", CASES)
def test_the_peer_data_tells_eps_conventions_apart(name, spec):
    """The cases are fresh layers (running variance 1), so what pins the convention is eps
    itself: eps outside the sqrt, or eps counted twice, misses PyTorch's outputs by more than
    the bound (6.5x at eps = 1e-5, 645x at 1e-3)."""
    x, y, scale, bias, mean, var, eps = _case(name)
    per_channel = (-1,) + (1,) * (x.ndim - 2)
    model = error_model.model_for(spec.tolerance, str(x.dtype))
    for placement, e in (("outside_sqrt", eps), ("inside_sqrt", 2 * eps)):
        wrong = oracle.normalize(x, mean.astype(np.float64).reshape(per_channel),
                                 var.astype(np.float64).reshape(per_channel), e, scale, bias, 1, placement)
        bound = error_model.y_eval_bound(model, x, scale, bias, mean, var, eps, 1,
                                         error_model.unit_roundoff(str(y.dtype)), wrong)
        assert not compare(y, wrong, bound).ok, f"{name}: eps {placement} x{e / eps:g} is not told apart"

"""Keras 3 Layer subclasses (`--kind keras-layer`) audited as their authors build and call
them; verdicts and violated clauses stated before any run (tests/specimens/keras_style.py).
On the torch backend: the layer code is backend-agnostic, and Keras on JAX compiles every eager
op per shape (about 2 min a specimen here, against 10-40 s)."""
from pathlib import Path

import pytest

import bnconf
from bnconf.cases import layouts

pytest.importorskip("keras")
pytest.importorskip("torch")
SPECIMENS = Path(__file__).parent / "specimens" / "keras_style.py"
INIT = "{}(axis=axis, momentum=momentum, epsilon=eps)"
CHANNELS_LAST = ("NC", "NLC", "NHWC", "NDHWC")

# (name, --init, verdict, violated clauses, scope layouts)
CASES = [
    ("KerasBN", INIT, "conforms", set(), tuple(layouts.LAYOUTS)),
    # NAME(): Keras' defaults (axis -1, momentum 0.99, epsilon 1e-3), channels-last layouts
    ("KerasBN", None, "conforms", set(), CHANNELS_LAST),
    # the variance divided by n - 1, in the transform and in the moving variance it feeds
    ("UnbiasedKerasBN", INIT, "violates", {"BN-VAR-BIASED", "BN-RUNVAR-BIASED"}, tuple(layouts.LAYOUTS)),
    # keras.ops.mean computes a float64 mean in float32 precision (Keras 3.15.1): one finding, the
    # output, running-statistics, one-value and gradient failures it causes blocked by it
    ("OpsMeanBN", INIT, "violates", {"BN-DTYPE-F64"}, tuple(layouts.LAYOUTS)),
    # Keras 2 layer code (add_update): said to be Keras 2 code, under the training transform alone
    ("Keras2BN", INIT, "violates", {"BN-NORMALIZE"}, tuple(layouts.LAYOUTS)),
]


@pytest.mark.clause("BN-VAR-BIASED", "BN-RUNVAR-BIASED", "BN-DTYPE-F64", "BN-NORMALIZE")
@pytest.mark.parametrize("name, init, verdict, violated, scope", CASES,
                         ids=[f"{c[0]}-{'init' if c[1] else 'default'}" for c in CASES])
def test_keras_layer_specimens(monkeypatch, assert_verdict, name, init, verdict, violated, scope):
    monkeypatch.setenv("KERAS_BACKEND", "torch")   # the user's code runs in a process of its own
    rep = bnconf.audit(f"{SPECIMENS}:{name}", "keras", kind="keras-layer", init=init and init.format(name),
                       quota=20, seed=0, fingerprint=False, shrink_budget=3)
    assert_verdict(rep, verdict, violated, scope)
    if name == "Keras2BN":
        assert "written for Keras 2" in rep.violations[0]["message"], rep.violations[0]
    if name == "OpsMeanBN":
        assert {"BN-NORMALIZE", "BN-ONE-VALUE"} <= {b["clause"] for b in rep.blocked}, rep.blocked


def test_a_class_that_is_not_a_keras_layer_is_a_usage_error(run_cli):
    out = run_cli("audit", f"{SPECIMENS}:ops", "--profile", "keras", "--kind", "keras-layer",
                  env={"KERAS_BACKEND": "torch"})
    assert out.returncode == 2 and "is not a keras.layers.Layer subclass" in out.stderr, out.stderr

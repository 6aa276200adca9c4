"""A reproducer holds its adapter's code, not bnconf: for every built-in implementation whose
framework is installed here, that code alone must list the implementation it reproduces."""
import importlib.util

import pytest

from bnconf.report.reproducers import adapter_script
from bnconf.running.registry import all_implementations

FRAMEWORK = {"torch": "torch", "jax": "jax", "onnx": "onnxruntime", "snippets": "torch", "tensorflow": "tensorflow"}
IMPLS = [i for i in all_implementations() if not getattr(i, "sync", False) and i.family in FRAMEWORK]


def test_there_are_implementations_to_check():
    assert {i.family for i in IMPLS} >= {"torch", "jax", "onnx", "snippets"}


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
def test_the_adapter_code_of_a_reproducer_lists_its_implementation(impl):
    if importlib.util.find_spec(FRAMEWORK[impl.family]) is None:
        pytest.skip(f"{FRAMEWORK[impl.family]} is not installed here")
    namespace = {"__name__": "bnconf_reproducer"}
    exec(compile(adapter_script(impl), f"<reproducer of {impl.name}>", "exec"), namespace)
    assert impl.name in [i.name for i in namespace["implementations"]()]

"""Where implementations come from. Importing an adapter module imports no framework."""
from __future__ import annotations

import importlib

# Adapter modules. Each implementation names its family; a tox environment audits one
# family (what its environment installs), each implementation in its own process.
MODULES = (
    "bnconf.adapters.torch_bn",
    "bnconf.adapters.tf_bn",
    "bnconf.adapters.keras_bn",
    "bnconf.adapters.jax_bn",
    "bnconf.adapters.onnx_bn",
    "bnconf.adapters.snippets",
)
FAMILIES = ("torch", "tensorflow", "jax", "onnx", "snippets")


class UnknownImplementation(KeyError):
    def __str__(self):
        return self.args[0]


def all_implementations() -> list:
    out = []
    for mod in MODULES:
        out.extend(importlib.import_module(mod).implementations())
    return out


def family_implementations(family: str) -> list:
    if family not in FAMILIES:
        raise UnknownImplementation(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return [i for i in all_implementations() if i.family == family]


def find(name: str):
    for impl in all_implementations():
        if impl.name == name:
            return impl
    raise UnknownImplementation(f"unknown implementation {name!r}; `bnconf fingerprint --list` lists them")

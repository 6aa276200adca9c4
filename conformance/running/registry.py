"""Where implementations come from. Importing an adapter module imports no framework."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

# Adapter modules. Each implementation names its family; a tox environment audits one
# family (what its environment installs), each implementation in its own process.
MODULES = (
    "bnconf.adapters.torch_bn",
    "bnconf.adapters.tf_bn",
    "bnconf.adapters.keras_bn",
    "bnconf.adapters.jax_bn",
    "bnconf.adapters.equinox_bn",
    "bnconf.adapters.onnx_bn",
    "bnconf.adapters.snippets",
    "bnconf.adapters.sync_jax",
    "bnconf.adapters.sync_tf",
    "bnconf.adapters.sync_torch",
)
FAMILIES = ("torch", "tensorflow", "jax", "onnx", "snippets", "distributed", "extra")


def _extra_modules() -> tuple:
    """BNCONF_ADAPTERS: comma-separated module names or .py paths of third-party adapters
    (each with an `implementations()` of its own), audited like the built-in ones."""
    return tuple(m.strip() for m in os.environ.get("BNCONF_ADAPTERS", "").split(",") if m.strip())


class UnknownImplementation(KeyError):
    def __str__(self):
        return self.args[0]


def _module_implementations(mod: str) -> list:
    if mod.endswith(".py"):
        name = "bnconf_extra_" + str(abs(hash(mod)))
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, mod)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        return sys.modules[name].implementations()
    return importlib.import_module(mod).implementations()


def all_implementations() -> list:
    """Every implementation whose adapter module imports here. Adapter modules import no
    framework, except the specimens that import torch at the top as their documents do:
    where torch is missing they are left out of the listing (and said so by `find`)."""
    out = []
    for mod in MODULES + _extra_modules():
        try:
            out.extend(_module_implementations(mod))
        except ImportError:
            if not mod.endswith("snippets"):
                raise
    return out


def family_implementations(family: str) -> list:
    if family not in FAMILIES:
        raise UnknownImplementation(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if family == "snippets":
        return _module_implementations("bnconf.adapters.snippets")
    return [i for mod in MODULES + _extra_modules() if not mod.endswith("snippets")
            for i in _module_implementations(mod) if i.family == family]


def find(name: str):
    mods = ["bnconf.adapters.snippets"] if name.startswith("snippet.") else [
        m for m in MODULES + _extra_modules() if not m.endswith("snippets")]
    for mod in mods:
        for impl in _module_implementations(mod):
            if impl.name == name:
                return impl
    raise UnknownImplementation(f"unknown implementation {name!r}; `bnconf fingerprint --list` lists them")

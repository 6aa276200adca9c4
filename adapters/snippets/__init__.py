"""Specimens: BN code transcribed from the source documents (see each module's docstring)."""
from .registry import implementations  # noqa: F401  (the adapter registry's entry point)

"""Specimens: BN code transcribed from the source documents (see each module's docstring)."""


def implementations():
    from .registry import implementations as _impls
    return _impls()

"""bnconf: a cross-framework conformance spec and test suite for Batch Normalization."""
__version__ = "0.1.0"


def audit(target, profile, **kwargs):
    """Audit a user BN function or torch module class; see bnconf.frontends.user_audit.audit."""
    from bnconf.frontends.user_audit import audit as _audit
    return _audit(target, profile, **kwargs)

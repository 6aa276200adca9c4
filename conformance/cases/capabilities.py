"""Which clauses an implementation can be asked about: a clause's `needs` (spec/batchnorm.yaml)
against the implementation's capabilities (adapters/_protocol.py, where each default lives)."""
from __future__ import annotations

# Needs that are no field of the capabilities but follow from them (capability_ok says how).
DERIVED_NEEDS = ("low_precision", "float64", "eval_mode")


def missing_capability(caps, needs) -> str | None:
    """The first of a clause's `needs` that the implementation lacks."""
    return next((n for n in needs if not capability_ok(caps, n)), None)


def capability_ok(caps, need) -> bool:
    """need: one capability, or a tuple of them that are all needed (BN-INIT judges the initial
    running statistics: without them only a failing output could show it, never a pass).
    A name that is no field of `caps` (a single-device need asked of a data-parallel
    wrapper) is lacking."""
    if isinstance(need, tuple):
        return all(capability_ok(caps, n) for n in need)
    if need == "low_precision":
        return bool({"float16", "bfloat16"} & set(caps.dtypes))
    if need == "float64":
        return "float64" in caps.dtypes
    if need == "no_running_stats":
        return bool(caps.no_running_stats or not caps.running_stats)
    if need == "eval_mode":
        return bool(caps.grads and (caps.running_stats or caps.no_running_stats or caps.eval_batch_stats))
    return bool(getattr(caps, need, False))

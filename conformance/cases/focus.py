"""What a case must look like to exercise a clause: the clause's `focus` in the spec, written
in traits read off the case alone."""
from __future__ import annotations

import numpy as np

from bnconf.cases.case import DEFAULT, Case


def shape_kind(shape, fa) -> str:
    if len(shape) and shape[0] == 0:
        return "empty"
    return "one_value" if int(np.prod(shape)) == shape[fa] else "normal"


# What a case must look like to exercise a clause is the clause's `focus` in the spec
# (spec/batchnorm.yaml): the scheduler (quota.py) aims cases at the clauses short of their
# quota, and counts a case for a clause when the case's traits meet its focus (`meets`),
# never by what the implementation returned: the case sequence of a seed is then the same
# whatever the outcomes, on every machine.


def merge_focus(a: dict, b: dict) -> dict | None:
    """Both foci at once, or None where they contradict (e.g. empty batch and a constant channel)."""
    out = dict(a)
    for k, v in b.items():
        both = tuple(x for x in out.get(k, v) if x in v)
        if not both:
            return None
        out[k] = both
    return out


# |mean|/std from which a case is ill-conditioned (spec tolerance.ill_conditioned_kappa,
# BN-VAR-STABLE); KAPPAS below it are "low".
HIGH_KAPPA = 10.0


def case_traits(case: Case) -> dict:
    """The traits a focus is written in, read off the case alone (no outcome)."""
    mom = "default" if case.momentum == DEFAULT else ("none" if case.momentum is None else "value")
    return {"shape": shape_kind(case.shape, case.feature_axis), "special": case.special, "affine": case.affine,
            "eps": "default" if case.eps == DEFAULT else "value", "momentum": mom,
            "track": case.track_running_stats, "dtype": case.dtype,
            "kappa": "high" if case.kappa >= HIGH_KAPPA else "low"}


def meets(focus: dict, case) -> bool:
    """Whether a case has every trait the focus asks for (single-device or cross-replica)."""
    traits = sync_case_traits(case) if hasattr(case, "counts") else case_traits(case)
    return all(traits.get(k) in v for k, v in focus.items())


def sync_case_traits(case) -> dict:
    return {"split": "uneven" if len(set(case.counts)) > 1 else "even", "dtype": case.dtype}

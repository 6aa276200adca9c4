"""One bug, one finding: which failing clauses fail only because a clause they depend on does.

Each clause's `depends_on` (spec/batchnorm.yaml) names the clauses whose deviation can make
it fail too. A failing clause B is *blocked* by a failing clause A it depends on (directly
or through others) when the run shows that A's deviation explains B's failures:

* A measured a convention or a default (eps outside the sqrt, Keras-form momentum,
  eps = 1e-3, ...) and each of B's failing cases (one per kind of deviation) passes B once
  the profile takes A's measured value: the failure is A's, seen again downstream; or
* B depends on A directly and failed only on cases on which A failed too, and each of A's
  failures names its cause (A is a root that no convention re-judges: wrong reduction axes,
  a call that raises, a mutated input). Only
  a direct dependency: through a chain, co-failing with an unrelated root (eps placement fails
  nearly every case) would hide an independent bug.

A blocked clause is shown with its root, never counted as a finding. A dependent that also
fails for a reason of its own (a case A's deviation does not explain) stays a finding.
"""
from __future__ import annotations

from dataclasses import replace

DEFAULTS = ("default_eps", "default_momentum")


def ancestors(spec, cid: str) -> set[str]:
    out, todo = set(), list(spec.clauses[cid].depends_on)
    while todo:
        a = todo.pop()
        if a not in out:
            out.add(a)
            todo.extend(spec.clauses[a].depends_on)
    return out


def variant_profile(profile, measured: dict):
    """The profile with a root's measured conventions and defaults, or None if it measured none."""
    conv = {k: v for k, v in measured.items() if k in profile.conventions and v != profile.conventions[k]
            and v != "other"}
    dflt = {k: v for k, v in measured.items() if k in DEFAULTS}
    if not conv and not dflt:
        return None
    out = profile.with_convention(**conv) if conv else profile
    return replace(out, **dflt) if dflt else out


def find_blocked(tallies: dict, spec, profile, rejudge) -> dict:
    """(clause, dtype) -> sorted root clauses that block it. rejudge(case, profile) returns the
    outcomes of the case judged under another profile (the same implementation, re-run)."""
    failing = {k: t for k, t in tallies.items() if t.failed and not t.errors}
    by_clause: dict = {}
    for (cid, _), t in failing.items():
        by_clause.setdefault(cid, []).append(t)
    out = {}
    for (cid, dtype), t in sorted(failing.items()):
        roots = []
        direct = set(spec.clauses[cid].depends_on)
        for root in sorted(ancestors(spec, cid) & set(by_clause)):
            if _explains(root, by_clause[root], cid, t, profile, rejudge, root in direct):
                roots.append(root)
        if roots:
            out[(cid, dtype)] = roots
    return out


def _attributed(root_tallies) -> bool:
    """Every failure of the root names what it is (a measured convention or a cause), not just
    a quantity off the oracle: an all-NaN output fails BN-MEAN and BN-NORMALIZE on the same
    cases, and neither explains the other."""
    return all(not kind.startswith("deviation in ") for rt in root_tallies for kind in rt.kinds)


def _explains(root, root_tallies, cid, t, profile, rejudge, direct) -> bool:
    failed_with_root = set().union(*(rt.failed_at for rt in root_tallies))
    if direct and t.failed_at <= failed_with_root and _attributed(root_tallies):
        return True
    measured = {}
    for rt in root_tallies:
        for k, v in rt.fail_measured.items():
            measured.setdefault(k, v)
    variant = variant_profile(profile, measured)
    if variant is None:
        return False
    for _, case in t.kinds.values():
        try:
            outs = rejudge(case, variant)
        except Exception:
            return False
        if any(o.clause == cid and not o.ok for o in outs):
            return False
    return True

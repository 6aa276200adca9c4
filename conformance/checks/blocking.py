"""One bug, one finding: which failing clauses fail only because a clause they depend on does.

Each clause's `depends_on` (spec/batchnorm.yaml) names the clauses whose deviation can make
it fail too. A failing clause B is *blocked* by a failing clause A it depends on (directly
or through others) when the run shows that A's deviation explains B's failures:

* A measured a convention or a default (eps outside the sqrt, Keras-form momentum,
  eps = 1e-3, eps used twice over, ...) and each of B's failing cases (one per kind of deviation) passes B once
  the profile takes A's measured value: the failure is A's, seen again downstream; or
* A measured a cause that names a variant of the judgement, and each of B's failing cases
  passes B under it: the same case in the layout the implementation used (`feature_axis_used`),
  without the scale and shift it ignored (`affine`), with the scale and shift it cannot do
  without (`affine_off`), centred (`variance_algorithm`: a
  variance that loses precision with conditioning), or judged by the error model of the
  precision it computed in (`compute_dtype`); or
* B depends on A directly and failed only on cases on which A failed too, and each of A's
  failures names its cause (A is a root that no convention re-judges: wrong reduction axes,
  a call that raises, a mutated input). Only
  a direct dependency: through a chain, co-failing with an unrelated root (eps placement fails
  nearly every case) would hide an independent bug. A precision or conditioning root never
  blocks a failure that measured a convention: rounding does not explain what a convention does.

An exception is the call's, not the clause's: where several failing clauses failed only by
the implementation raising, and raising what another failing clause raised too (the same type
and message: a 2-D-only function's "too many values to unpack" under BN-NORMALIZE and
BN-ONE-VALUE alike), each exception is one finding, under one root: of the clauses that raised
it, the one that is an ancestor of most of the others, then the one failing most cases with it,
then the first in the spec. A clause that is the root of any exception it raised is a finding;
one that failed in any other way as well stays a finding.

Precision clauses and the clauses they can disturb depend on each other; a clause that is
blocked only by clauses that are themselves blocked (by it, in the end) stays a finding.

A blocked clause is shown with its root, never counted as a finding. A dependent that also
fails for a reason of its own (a case A's deviation does not explain) stays a finding.
"""
from __future__ import annotations

from dataclasses import replace

from bnconf.cases.case import centred, in_layout

DEFAULTS = ("default_eps", "default_momentum", "eps_scale", "running_var_eps")
# measured cause -> the same case without it
CASE_VARIANTS = {
    "feature_axis_used": lambda case, axis: in_layout(case, axis),
    "affine": lambda case, v: case.replace(affine="off") if v == "ignored" and case.affine != "off" else None,
    "affine_off": lambda case, v: case.replace(affine="random") if v == "raises" and case.affine == "off" else None,
    # two values per channel centre to (a, -a), exact in any precision: no evidence there
    "variance_algorithm": lambda case, v: centred(case) if v == "one_pass" and not case.centred
    and case.n_per_channel > 2 else None,
}
MODEL_VARIANT = "compute_dtype"     # measured precision -> judged by that precision's error model
NUMERIC = ("compute_dtype", "variance_algorithm")


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
    shown = {root: set().union(*(rt.failed_at for rt in ts)) for root, ts in by_clause.items()}
    for _round in range(2):
        # second round: a case also shows a root's deviation where a clause the root was shown
        # (by re-judgement) to explain failed (per-position statistics fail the output there
        # without the output check naming the axes)
        for (cid, dtype), t in sorted(failing.items()):
            if (cid, dtype) in out:
                continue
            roots = []
            direct = set(spec.clauses[cid].depends_on)
            for root in sorted((ancestors(spec, cid) - {cid}) & set(by_clause)):
                if _explains(root, by_clause[root], cid, t, profile, rejudge, root in direct, shown[root]):
                    roots.append(root)
            if roots:
                out[(cid, dtype)] = roots
        for key, roots in out.items():
            for root in roots:
                shown[root] |= failing[key].failed_at
    for key, roots in _same_exception(failing, spec).items():
        out[key] = sorted(set(out.get(key, ())) | set(roots))
    return _live_roots(_break_mutual(out, by_clause), failing)


def _same_exception(failing: dict, spec) -> dict:
    """(clause, dtype) -> the roots of the exceptions that are its only failures (docstring)."""
    order = {cid: i for i, cid in enumerate(spec.clauses)}
    raisers: dict = {}          # exception -> clause -> cases failed with it
    for (cid, _), t in failing.items():
        for kind, exceptions in t.kind_raised.items():
            for r in exceptions - {None}:
                raisers.setdefault(r, {}).setdefault(cid, 0)
                raisers[r][cid] += t.kinds[kind][0]
    anc = {cid: ancestors(spec, cid) for by in raisers.values() for cid in by}

    def root(r):
        by = raisers[r]
        return max(by, key=lambda c: (sum(c in anc[o] and o not in anc[c] for o in by), by[c], -order[c]))
    roots = {r: root(r) for r in raisers}
    out = {}
    for key, t in failing.items():
        raised = set().union(*t.kind_raised.values()) if t.kind_raised else set()
        if not raised or None in raised or any(roots[r] == key[0] for r in raised):
            continue
        out[key] = sorted({roots[r] for r in raised})
    return out


def _conventions_only(tallies) -> bool:
    measured = {k for t in tallies for k in t.fail_measured}
    return bool(measured) and not measured & set(NUMERIC)


def _break_mutual(blocked: dict, by_clause: dict) -> dict:
    """Two clauses that measured conventions and each explain the other's failing cases are one
    confound, not two findings: on a case with one scale, eps outside the square root looks like
    eps inside it with another value. The clause that fails more cases is the root; the other is
    blocked by it. Precision and conditioning clauses keep the rule of the module docstring."""
    count = {cid: sum(t.failed for t in ts) for cid, ts in by_clause.items()}
    blockers: dict = {}
    for (cid, _), roots in blocked.items():
        blockers.setdefault(cid, set()).update(roots)
    out = {}
    for key, roots in blocked.items():
        a = key[0]
        kept = [r for r in roots if not (a in blockers.get(r, ()) and count[a] > count[r]
                                         and _conventions_only(by_clause[a]) and _conventions_only(by_clause[r]))]
        if kept:
            out[key] = kept
    return out


def _live_roots(blocked: dict, failing: dict) -> dict:
    """Each blocked tally's roots, resolved to clauses that are findings themselves: a root
    whose every failing tally is blocked hands on its own roots; a tally left with none (its
    roots all lead back to it) is a finding."""
    def live(cid):
        return any(key not in blocked for key in failing if key[0] == cid)

    out = {}
    for key, roots in blocked.items():
        seen, todo, found = {key[0]}, list(roots), set()
        while todo:
            r = todo.pop()
            if r in seen:
                continue
            seen.add(r)
            if live(r):
                found.add(r)
            else:
                todo.extend(x for k, rs in blocked.items() if k[0] == r for x in rs)
        if found:
            out[key] = sorted(found)
    return out


def _attributed(root_tallies) -> bool:
    """Every failure of the root names what it is (a measured convention or a cause), not just
    a quantity off the oracle: an all-NaN output fails BN-MEAN and BN-NORMALIZE on the same
    cases, and neither explains the other."""
    return all(not kind.startswith("deviation in ") for rt in root_tallies for kind in rt.kinds)


def _explains(root, root_tallies, cid, t, profile, rejudge, direct, failed_with_root) -> bool:
    measured = {}
    for rt in root_tallies:
        for k, v in rt.fail_measured.items():
            measured.setdefault(k, v)
    if direct and t.failed_at <= failed_with_root and _attributed(root_tallies) \
            and not (measured and all(k in NUMERIC for k in measured) and _names_convention(t, profile)):
        return True
    # each kind of the root's deviation is its own explanation (a stray match of another
    # convention on one case must not be mixed into the one that explains the rest)
    explanations = []
    for rt in root_tallies:
        for kind, (count, _) in sorted(rt.kinds.items(), key=lambda kv: -kv[1][0]):
            m = rt.kind_measured.get(kind) or {}
            if m and m not in explanations:
                explanations.append(m)
    if not explanations:
        return False
    for kind, (_, case) in t.kinds.items():
        own = t.kind_measured.get(kind) or {}
        if not any(_passes_under(m, case, cid, own, profile, rejudge) for m in explanations):
            return False
    return True


def _names_convention(t, profile) -> bool:
    """A failure of the tally measured a convention other than the profile's (not an
    unexplained quantity)."""
    return any(_deviates(k, v, profile) for m in t.kind_measured.values() for k, v in m.items())


def _deviates(key, value, profile) -> bool:
    """A measured convention that is not the profile's: what a convention finding is. A failure
    that measured the profile's own convention (beta for one value, as the profile says, but off
    by more than rounding) names no convention."""
    return key not in NUMERIC and value != "other" and profile.conventions.get(key, object()) != value


def _passes_under(measured, case, cid, own, profile, rejudge) -> bool:
    """Does B's failing case pass B once the judgement takes what the root measured? `own`:
    what B's failure itself measured."""
    if all(k in NUMERIC for k in measured) and any(_deviates(k, v, profile) for k, v in own.items()):
        return False      # rounding or conditioning never explains what a convention does
    variant = variant_profile(profile, measured) or profile
    compute = measured.get(MODEL_VARIANT)
    judged = case
    for k in sorted(measured):
        if k in CASE_VARIANTS:
            judged = CASE_VARIANTS[k](judged, measured[k]) or judged
    if judged is case and variant is profile and (compute is None or compute == case.dtype):
        return False      # nothing the root measured changes this case's judgement
    try:
        outs = rejudge(judged, variant, compute)
    except Exception:
        return False
    # a clause the re-judged case does not reach passes too: the case only reached it through
    # the root's deviation (a kernel that ignores the axis does not raise on one value per channel)
    return not any(o.clause == cid and not o.ok for o in outs)

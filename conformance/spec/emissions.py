"""The spec held to behaviour: which clauses each check really emits, observed on a fixture grid.

The static lint (lint.py) trusts two declarations: the spec's `check` for each clause and each
check's `emits` (what an error in the check is charged to). Both can drift from the code. This
audits a fixed grid with the engine's own case selection, which aims at every clause's focus
(the seeded faults of both forms, whose failures reach the attribution paths; the correct
kernel under every profile, whose conventions choose what the running-statistics and
one-value checks emit; real torch layers where torch is installed; the simulated cross-replica
kernels, synchronized and not), records what every check emitted, and reports each
disagreement.
"""
from __future__ import annotations

import importlib.util

from bnconf.running.targets import numpy_implementation
from bnconf.checks.registry import CHECKS, EMITS, NUMERIC
from bnconf.running.audit import audit_implementation
from bnconf.catalogs.faults import CATALOG, CORRECT_FORMS, FORMS, faulty
from bnconf.checks.sync import SYNC_CHECKS, SYNC_EMITS, SYNC_NUMERIC
from bnconf.running.sync_audit import audit_sync
from bnconf.running.registry import find
from bnconf.catalogs.sync_faults import SYNC_FAULTS, implementation as sync_implementation

GRID_QUOTA = 4      # cases per clause per fixture: every focus is met; the verdicts do not matter
# real layers for what the NumPy protocol cannot be asked (gradients, library defaults, the step
# counter, momentum=None, float16, second derivatives, freezing, reset, masks, renorm), each where
# the environment has its framework
FRAMEWORK_FIXTURES = (("torch", "torch.nn.BatchNorm2d"), ("torch", "torch.nn.functional.batch_norm"),
                      ("flax", "flax.linen.BatchNorm"), ("keras", "keras.layers.BatchNormalization[jax]"))


def observe(spec, quota: int = GRID_QUOTA, seed: int = 0) -> dict[str, set[str]]:
    """check function name -> the clause IDs it emitted over the fixture grid."""
    emitted: dict[str, set[str]] = {}
    fixtures = [(form, f"{form}:{name}", faulty(name, form)) for name in sorted(CATALOG) for form in CATALOG[name][1]]
    fixtures += [(form, f"{form}:correct:{name}", fn) for form in FORMS for name, fn in CORRECT_FORMS[form].items()]
    fixtures += [(p, f"{p}:correct", CORRECT_FORMS["torch"]["two_pass"]) for p in sorted(spec.profiles) if p not in FORMS]
    for profile, name, fn in fixtures:
        audit_implementation(numpy_implementation(fn, name, profile), "cpu", spec, spec.profile(profile),
                             quota=quota, seed=seed, shrink_budget=0, emitted=emitted)
    for module, name in FRAMEWORK_FIXTURES:
        if importlib.util.find_spec(module) is not None:
            impl = find(name)
            audit_implementation(impl, "cpu", spec, spec.profile(impl.profile), quota=quota, seed=seed,
                                 shrink_budget=0, emitted=emitted)
    for fault, synchronized in [(f, True) for f in sorted(SYNC_FAULTS)] + [("correct", False)]:
        audit_sync(sync_implementation(fault, synchronized), "cpu", spec, spec.profile("torch"), quota=quota,
                   seed=seed, shrink_budget=0, emitted=emitted)
    return emitted


def lint_emissions(spec, emitted: dict | None = None) -> list[str]:
    """Disagreements between the spec, the checks' declarations and what they emitted. A
    check's own clauses must each be seen; the attribution it shares with other checks
    (NUMERIC: precision and conditioning) must be seen from some check, since which faults
    reach which check's attribution is the grid's luck, not the declaration's truth."""
    emitted = observe(spec) if emitted is None else emitted
    declared = {fn.__name__: (set(EMITS.get(fn.__name__, ())), set(NUMERIC), "single-device")
                for fn in CHECKS.values()}
    declared.update({fn.__name__: (set(SYNC_EMITS.get(fn.__name__, ())), set(SYNC_NUMERIC), "cross-replica")
                     for fn in SYNC_CHECKS})
    problems = []
    shared_seen: dict[tuple, bool] = {}
    for name in sorted(declared):
        says, shared, family = declared[name]
        got = emitted.get(name, set())
        for cid in sorted(got - says):
            problems.append(f"check {name} emitted {cid} on the fixture grid but does not declare it (a crash of "
                            f"{name} would not be charged to {cid})")
        attribution = shared if shared <= says else set()
        for cid in sorted(says - attribution - got):
            problems.append(f"check {name} declares {cid} but never emitted it on the fixture grid")
        for cid in attribution:
            shared_seen[family, cid] = shared_seen.get((family, cid), False) or cid in got
    for family, cid in sorted(k for k, seen in shared_seen.items() if not seen):
        problems.append(f"no {family} check emitted the attribution {cid} on the fixture grid")
    for c in spec.clauses.values():
        if c.planned or c.withdrawn:
            continue
        fn = CHECKS.get(c.check)
        name = fn.__name__ if fn is not None else c.check
        if c.id not in emitted.get(name, set()):
            problems.append(f"{spec.path}:{spec.lines.get(c.id)}: {c.id}: its check {c.check!r} ({name}) never "
                            "emitted it on the fixture grid")
    return problems

"""One bug, one finding: each seeded fault of the catalog, in the torch and the keras form, is
reported under exactly its own clause(s), whatever else it breaks shown as blocked by them;
correct kernels (float64, two-pass, float32 Welford; both forms) have no finding.
BNCONF_FAULT_SEEDS (default "0") sets the seeds the CI tier runs; `bnconf bench` prints the
counts over ten seeds for the faults and fifty for the correct kernels."""
import os

import pytest

from bnconf.frontends.user_audit import audit
from bnconf.running.targets import numpy_implementation
from bnconf.catalogs.faults import CATALOG, CORRECT_FORMS, FORMS, faulty

SEEDS = [int(s) for s in os.environ.get("BNCONF_FAULT_SEEDS", "0").split(",")]


def _found(name, seed, form="torch"):
    rep = audit(None, form, impl=numpy_implementation(faulty(name, form), f"fault:{form}:{name}", form), seed=seed,
                fingerprint=False, shrink_budget=0)
    return rep, {v["clause"] for v in rep.violations + rep.warnings}


@pytest.mark.clause("BN-AXES", "BN-EPS-INSIDE", "BN-MOMENTUM-BATCH-WEIGHT", "BN-MOMENTUM-OLD-WEIGHT",
                    "BN-RUNVAR-UNBIASED", "BN-RUNVAR-BIASED", "BN-VAR-BIASED", "BN-EVAL-RUNNING",
                    "BN-EVAL-NO-UPDATE", "BN-VAR-STABLE", "BN-AFFINE", "BN-AFFINE-OFF", "BN-PURE", "BN-DTYPE-F64",
                    "BN-ONE-VALUE", "BN-EMPTY-BATCH", "BN-NONFINITE-CONFINED", "BN-DTYPE-OUTPUT")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name,form", [(n, f) for n in sorted(CATALOG) for f in sorted(CATALOG[n][1])])
def test_every_seeded_fault_is_reported_under_its_own_clause_only(name, form, seed):
    desc, wants = CATALOG[name]
    want = wants[form]
    rep, got = _found(name, seed, form)
    assert got == want, (f"{name} ({desc}, {form} form) at seed {seed}: expected exactly {sorted(want)}, got "
                         f"{sorted(got)}; " + "; ".join(f"{v['clause']}: {v['message'][:200]}"
                                                        for v in rep.violations + rep.warnings
                                                        if v["clause"] not in want))


def test_a_root_cause_lists_what_it_blocks():
    """eps outside the sqrt also breaks the training output, eval and folding: they are blocked
    by BN-EPS-INSIDE, shown with it, and not findings of their own."""
    rep, got = _found("eps_outside_sqrt", 0)
    assert got == {"BN-EPS-INSIDE"}
    blocked = {b["clause"]: b["blocked_by"] for b in rep.blocked}
    assert blocked and all("BN-EPS-INSIDE" in roots for roots in blocked.values())
    root = next(v for v in rep.violations if v["clause"] == "BN-EPS-INSIDE")
    assert set(root["blocks"]) == set(blocked)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", sorted(CORRECT_FORMS["torch"]))
def test_correct_kernels_have_no_findings(name, form, seed):
    rep = audit(None, form, impl=numpy_implementation(CORRECT_FORMS[form][name], f"correct:{form}:{name}", form),
                seed=seed, fingerprint=False, shrink_budget=0)
    assert rep.violations == [] and rep.warnings == [], [(v["clause"], v["message"]) for v in rep.violations]
    assert rep.cases >= 100

"""Detection power: the default audit catches every seeded fault by the clause it breaks,
and finds nothing wrong with correct kernels (a float32 Welford one included)."""
import pytest

from bnconf.audit_user import audit, numpy_implementation
from bnconf.fault_catalog import CORRECT, FAULTS, faulty


@pytest.mark.clause("BN-AXES", "BN-EPS-INSIDE", "BN-MOMENTUM-BATCH-WEIGHT", "BN-RUNVAR-UNBIASED", "BN-VAR-BIASED",
                    "BN-EVAL-RUNNING", "BN-EVAL-NO-UPDATE", "BN-VAR-STABLE", "BN-AFFINE", "BN-PURE", "BN-DTYPE-F64")
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_seeded_fault_is_caught_by_its_clause(name):
    desc, want = FAULTS[name]
    rep = audit(None, "torch", impl=numpy_implementation(faulty(name), f"fault:{name}", "torch"),
                max_examples=60, fingerprint=False, shrink_budget=0)
    got = {v["clause"] for v in rep.violations}
    assert got & want, f"{name} ({desc}) not caught by any of {sorted(want)}; found {sorted(got)}"


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_kernels_have_no_findings(name):
    rep = audit(None, "torch", impl=numpy_implementation(CORRECT[name], f"correct:{name}", "torch"),
                max_examples=100, fingerprint=False, shrink_budget=0)
    assert rep.violations == [], [(v["clause"], v["message"]) for v in rep.violations]
    assert rep.cases >= 100

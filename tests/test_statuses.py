"""Every clause ends with one honest status: bnconf's own failures are `error` (never a
pass, a skip or a fail charged to the implementation), a call that raises is the
implementation's failure under the clause that made it, and SHOULD clauses warn."""
import numpy as np
import pytest

from bnconf.checks import registry as checks
from bnconf.checks.evaluation import eval_no_update
from bnconf.checks.running_statistics import running_stats
from bnconf.results import records as rec_mod
from bnconf.running.targets import numpy_implementation
from bnconf.cases.case import Case
from bnconf.running.audit import audit_implementation, evaluate
from bnconf.catalogs.faults import CORRECT
from bnconf.spec.loader import get_spec

ORDINARY = Case(seed=5, shape=(6, 3, 2), feature_axis=1, eps=1e-3, momentum=0.1)


def _applicable(spec, profile):
    return {c.id for c in spec.clauses_for(profile) if not c.planned}


@pytest.mark.parametrize("profile", ["torch", "keras"])
def test_a_crashing_check_is_an_error_on_every_clause_it_judges(monkeypatch, profile):
    """Under keras the running-statistics check's first clause (BN-MOMENTUM-BATCH-WEIGHT) does
    not apply: a crash must still show, on the clauses that do."""
    def boom(ctx):
        raise ZeroDivisionError("planted bug in a check")
    real = running_stats
    for name, fn in list(checks.CHECKS.items()):
        if fn is real:
            monkeypatch.setitem(checks.CHECKS, name, boom)
    monkeypatch.setitem(checks.EMITS, "boom", checks.EMITS["running_stats"])
    spec = get_spec()
    prof = spec.profile(profile)
    impl = numpy_implementation(CORRECT["two_pass"], "correct", profile)
    outs, _, _ = evaluate(impl, ORDINARY, "cpu", spec, prof, _applicable(spec, prof))
    errored = {o.clause for o in outs if o.error}
    want = set(checks.EMITS["running_stats"]) & _applicable(spec, prof)
    assert want and errored == want
    assert all("planted bug in a check" in o.error for o in outs if o.error)


def test_an_errored_clause_records_error_with_its_traceback(monkeypatch):
    def boom(ctx):
        raise ZeroDivisionError("planted bug in a check")
    for name, fn in list(checks.CHECKS.items()):
        if fn is eval_no_update:
            monkeypatch.setitem(checks.CHECKS, name, boom)
    monkeypatch.setitem(checks.EMITS, "boom", ("BN-EVAL-NO-UPDATE",))
    spec = get_spec()
    impl = numpy_implementation(CORRECT["two_pass"], "correct", "torch")
    res = audit_implementation(impl, "cpu", spec, spec.profile("torch"), quota=5, shrink_budget=0)
    t = res.tallies[("BN-EVAL-NO-UPDATE", "float32")]
    rec = rec_mod.tally_record(impl, "cpu", {}, "float32", "BN-EVAL-NO-UPDATE", t, None, 0, None)
    assert rec["status"] == "error" and "ZeroDivisionError" in rec["traceback"] and rec["case"]


def _refusing_relations(fn, name):
    """The implementation's main trace runs; every later (fresh) instance raises on forward."""
    impl = numpy_implementation(fn, name, "torch")
    build, built = impl.build, []

    def counting_build(params, device):
        inst = build(params, device)
        built.append(inst)
        if len(built) > 1:
            def refuse(*a, **k):
                raise RuntimeError("refused a second instance")
            inst.forward = refuse
        return inst
    impl.build = counting_build
    return impl


def test_a_relation_call_that_raises_fails_its_clause():
    spec = get_spec()
    prof = spec.profile("torch")
    impl = _refusing_relations(CORRECT["two_pass"], "refuses")
    outs, trace, _ = evaluate(impl, ORDINARY, "cpu", spec, prof, _applicable(spec, prof))
    failed = {o.clause: o for o in outs if not o.ok}
    assert {"BN-AXES", "BN-SHIFT-INVARIANCE", "BN-SCALE-INVARIANCE"} <= set(failed)
    assert "RuntimeError" in failed["BN-SHIFT-INVARIANCE"].note
    assert not any(o.error for o in outs)


def test_an_implementation_writing_into_its_input_does_not_change_the_oracle():
    """BN-PURE is the only finding of a BN that writes into x: every call got a copy."""
    def writes(x, weight, bias, running_mean, running_var, **kw):
        out = CORRECT["two_pass"](x, weight, bias, running_mean, running_var, **kw)
        x += 1.0
        return out
    spec = get_spec()
    prof = spec.profile("torch")
    impl = numpy_implementation(writes, "writes", "torch")
    outs, _, arrays = evaluate(impl, ORDINARY, "cpu", spec, prof, _applicable(spec, prof))
    assert {o.clause for o in outs if not o.ok} == {"BN-PURE"}
    from bnconf.cases.case import materialize
    assert np.array_equal(arrays["x_train_0"], materialize(ORDINARY)["x_train_0"])


def test_levels_come_from_the_spec():
    spec = get_spec()
    assert rec_mod.violation_status(spec.clauses["BN-EMPTY-BATCH"].level) == "warn"
    assert rec_mod.violation_status(spec.clauses["BN-NORMALIZE"].level) == "fail"
    assert "warn" not in rec_mod.BAD and "warn" in rec_mod.STRICT_BAD

"""Known deviations are pinned to evidence: the kind of deviation an entry expects, and a case
that shows it, re-run on every audit (the pinned case, not the sampled cases, decides XPASS)."""
import pytest

from bnconf.running.targets import numpy_implementation
from bnconf.cases.case import Case
from bnconf.running.audit import evaluate
from bnconf.catalogs.faults import CORRECT, faulty
from bnconf.results.known import apply_known, load_known, replay
from bnconf.spec.loader import SpecError

CASE = Case(seed=5, shape=(6, 3, 2), feature_axis=1, eps=1e-2, momentum=0.1, log_scale=-1.0)
HERE = {"cpu": "Test CPU", "flags": ["avx2"], "machine": "x86_64"}
ENTRY = ("  - clause: BN-EPS-INSIDE\n    match: eps_placement=outside_sqrt\n    cause: eps\n"
         "    case: {case}\n")


def _write(d, name, body, causes="causes:\n  eps:\n    reason: r\n    link: https://example.org/x\n"):
    (d / f"{name}.yaml").write_text(f"implementation: {name}\n{causes}deviations:\n{body}")


def _rec(clause, dtype, status, kinds=None, ratio=5.0):
    r = {"implementation": "impl.x", "clause": clause, "dtype": dtype, "device": "cpu", "status": status,
         "ratio": ratio}
    if kinds:
        r["kinds"] = {k: {"cases": 1, "case": CASE.to_json()} for k in kinds}
    return r


def test_entries_need_a_kind_and_a_case(spec, tmp_path):
    _write(tmp_path, "impl.a", "  - clause: BN-EPS-INSIDE\n    cause: eps\n    case: {seed: 1}\n")
    with pytest.raises(SpecError, match="deviations/0/match: is required"):
        load_known("impl.a", spec, tmp_path)
    _write(tmp_path, "impl.b", "  - clause: BN-EPS-INSIDE\n    match: m\n    cause: eps\n")
    with pytest.raises(SpecError, match="deviations/0/case: is required"):
        load_known("impl.b", spec, tmp_path)
    _write(tmp_path, "impl.c", "  - clause: BN-EPS-INSIDE\n    match: m\n    cause: nope\n    case: {seed: 1}\n")
    with pytest.raises(SpecError) as e:
        load_known("impl.c", spec, tmp_path)
    assert e.value.line == 9 and "no cause 'nope'" in str(e.value)
    _write(tmp_path, "impl.d", "  - clause: BN-" + "NOPE\n    match: m\n    cause: eps\n    case: {seed: 1}\n")
    with pytest.raises(SpecError, match="unknown clause ID"):
        load_known("impl.d", spec, tmp_path)


def test_a_new_kind_under_a_listed_clause_is_a_failure(spec, tmp_path):
    _write(tmp_path, "impl.x", ENTRY.format(case="{seed: 1}"))
    entries = load_known("impl.x", spec, tmp_path)
    recs = [_rec("BN-EPS-INSIDE", "float32", "fail", ["eps_placement=outside_sqrt"]),
            _rec("BN-EPS-INSIDE", "float64", "fail", ["eps_placement=outside_sqrt", "deviation in train_#/y"]),
            _rec("BN-EPS-INSIDE", "float16", "fail", ["eps_placement=minus_inside_sqrt"])]
    out = apply_known(recs, entries, "impl.x", "cpu")
    assert [r["status"] for r in out] == ["known", "fail", "fail"]
    assert "deviation in train_#/y" in out[1]["note"]
    assert out[0]["known"]["where"].endswith("impl.x.yaml:7")


def _entries_for(spec, tmp_path, case, pinned_on=None):
    body = ENTRY.format(case=case.describe())
    if pinned_on:
        body += "    pinned_on: " + __import__("json").dumps(pinned_on) + "\n"
    _write(tmp_path, "impl.x", body)
    return load_known("impl.x", spec, tmp_path)


def _evaluator(fn, spec):
    prof = spec.profile("torch")
    impl = numpy_implementation(fn, "impl.x", "torch")
    applicable = {c.id for c in spec.clauses_for(prof)}
    return lambda cj: evaluate(impl, Case.from_json(cj), "cpu", spec, prof, applicable)[0]


def test_the_pinned_case_decides_whether_a_deviation_is_still_there(spec, tmp_path):
    """The real eps-outside-sqrt kernel reproduces the entry on its pinned case even when the
    generated records all passed; the correct kernel passes it: unexpected_pass, every run."""
    entries = _entries_for(spec, tmp_path, CASE)
    passed = [_rec("BN-EPS-INSIDE", "float32", "pass")]
    rep = replay(entries, "cpu", HERE, _evaluator(faulty("eps_outside_sqrt"), spec))
    assert [r["result"] for r in rep] == ["reproduced"]
    out = apply_known([dict(r) for r in passed], entries, "impl.x", "cpu", rep)
    assert [r["status"] for r in out] == ["known"]
    rep = replay(entries, "cpu", HERE, _evaluator(CORRECT["two_pass"], spec))
    assert [r["result"] for r in rep] == ["passes"]
    out = apply_known([dict(r) for r in passed], entries, "impl.x", "cpu", rep)
    assert [r["status"] for r in out] == ["pass", "unexpected_pass"] and "pinned case passes" in out[1]["note"]


def test_another_kind_on_the_pinned_case_is_a_failure(spec, tmp_path):
    entries = _entries_for(spec, tmp_path, CASE)
    rep = replay(entries, "cpu", HERE, _evaluator(faulty("eps_minus"), spec))
    assert rep[0]["result"] == "other" and "minus_inside_sqrt" in rep[0]["detail"]
    out = apply_known([], entries, "impl.x", "cpu", rep)
    assert [r["status"] for r in out] == ["fail"]


def test_a_pinned_case_that_passes_on_another_platform_is_platform_dependent(spec, tmp_path):
    entries = _entries_for(spec, tmp_path, CASE, pinned_on={"cpu": "Other CPU", "flags": ["avx512_fp16"],
                                                            "machine": "x86_64"})
    rep = replay(entries, "cpu", HERE, _evaluator(CORRECT["two_pass"], spec))
    assert rep[0]["result"] == "platform"
    out = apply_known([_rec("BN-EPS-INSIDE", "float32", "pass")], entries, "impl.x", "cpu", rep)
    assert [r["status"] for r in out] == ["pass"] and out[0]["pinned"][0]["result"] == "platform"
    same = _entries_for(spec, tmp_path, CASE, pinned_on=HERE)
    assert replay(same, "cpu", HERE, _evaluator(CORRECT["two_pass"], spec))[0]["result"] == "passes"

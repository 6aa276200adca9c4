"""The spec loads, says where it is wrong, stays rendered, and every clause is tested."""
import re
from pathlib import Path

import pytest

from bnconf.spec.loader import SpecError, default_spec_path, load_spec

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text):
    p = tmp_path / "spec.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_spec_loads_with_stable_ids_and_all_profiles(spec):
    assert {"paper", "torch", "keras", "flax", "haiku", "onnx", "tf-fused"} <= set(spec.profiles)
    for cid in spec.clauses:
        assert re.fullmatch(r"BN-[A-Z0-9]+(-[A-Z0-9]+)*", cid)
    for p in spec.profiles.values():
        assert set(p.conventions) == set(spec.conventions)
    # conventions as data: the momentum clause of each profile follows its momentum_form field
    assert spec.clause_for_convention(spec.profile("torch"), "momentum_form").id == "BN-MOMENTUM-BATCH-WEIGHT"
    assert spec.clause_for_convention(spec.profile("keras"), "momentum_form").id == "BN-MOMENTUM-OLD-WEIGHT"
    assert spec.clause_for_convention(spec.profile("torch"), "running_variance").id == "BN-RUNVAR-UNBIASED"


def test_malformed_yaml_names_file_and_line(tmp_path):
    text = default_spec_path().read_text().replace("spec_version: 1", "spec_version: [1", 1)
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text))
    assert e.value.line is not None and str(tmp_path) in str(e.value)


def test_schema_violation_names_line_and_field(tmp_path):
    text = default_spec_path().read_text().replace("    level: MUST\n", "    level: MAYBE\n", 1)
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text))
    line_of_maybe = text.splitlines().index("    level: MAYBE") + 1
    assert e.value.line == line_of_maybe and e.value.field == "clauses/0/level"


def test_unknown_convention_value_and_duplicate_id(tmp_path):
    text = default_spec_path().read_text()
    bad = text.replace("momentum_form: batch_weight\n    default_momentum: 0.1", "momentum_form: sideways\n    default_momentum: 0.1", 1)
    with pytest.raises(SpecError, match="sideways"):
        load_spec(write(tmp_path, bad))
    dup = text.replace("id: BN-MEAN\n", "id: BN-AXES\n", 1)
    with pytest.raises(SpecError, match="duplicate clause ID 'BN-AXES'") as e:
        load_spec(write(tmp_path, dup))
    lines = dup.splitlines()
    first = lines.index("  - id: BN-AXES")
    assert e.value.line == lines.index("  - id: BN-AXES", first + 1) + 1  # the duplicate, not the original


def test_unknown_profile_and_clause_are_clear(spec):
    with pytest.raises(SpecError, match="unknown profile 'pytorch'; known: .*torch"):
        spec.profile("pytorch")
    with pytest.raises(SpecError, match="unknown clause ID"):
        spec.clause("BN-" + "X")


def test_lint_passes_and_catches_both_directions(spec, tmp_path):
    from bnconf.spec.lint import lint
    assert lint(spec, [ROOT / "conformance", ROOT / "adapters", ROOT / "tests"]) == []
    stray = tmp_path / "x.py"
    stray.write_text("# see " + "BN-" + "DOES-NOT-EXIST\n")  # built so this file cites no such ID
    assert any("DOES-NOT-EXIST" in p for p in lint(spec, [stray]))
    from bnconf.checks import registry as checks
    saved = dict(checks.EMITS)
    try:
        checks.EMITS["y_train"] = tuple(c for c in checks.EMITS["y_train"] if c != "BN-VAR-BIASED")
        assert any("BN-VAR-BIASED is defined but no check emits it" in p for p in lint(spec, [stray]))
    finally:
        checks.EMITS.clear()
        checks.EMITS.update(saved)


def test_rendered_spec_is_up_to_date_and_has_an_anchor_per_clause(spec):
    from bnconf.spec.render import render
    committed = (ROOT / "spec" / "SPEC.md").read_text(encoding="utf-8")
    assert committed == render(spec), "run `bnconf spec --render`"
    for cid in spec.clauses:
        assert f'<a id="{cid.lower()}"></a>' in committed
    assert "## The tolerance model" in committed


def test_cli_spec_lists_and_prints_one(run_cli):
    out = run_cli("spec")
    assert out.returncode == 0 and "BN-RUNVAR-UNBIASED" in out.stdout
    one = run_cli("spec", "BN-RUNVAR-UNBIASED")
    assert one.returncode == 0 and "n/(n-1)" in one.stdout and "SPEC.md#bn-runvar-unbiased" in one.stdout
    bad = run_cli("spec", "BN-" + "X")
    assert bad.returncode == 2 and "unknown clause ID" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def emitted(spec):
    from bnconf.spec.emissions import observe
    return observe(spec)


def test_the_spec_agrees_with_what_the_checks_emit(spec, emitted):
    """Each clause's `check` emits it, and each check emits exactly what it declares (so a crash
    of the check is charged to every clause it judges), on the fixture grid."""
    from bnconf.spec.emissions import lint_emissions
    assert lint_emissions(spec, emitted) == []


def test_the_emission_lint_catches_a_wrong_declaration(spec, emitted):
    from bnconf.spec.emissions import lint_emissions
    from bnconf.checks import sync as sync_checks
    saved = dict(sync_checks.SYNC_EMITS)
    try:   # the declaration the old SYNC_EMITS made: sync_grads never emits BN-SYNC-WEIGHTED
        sync_checks.SYNC_EMITS["sync_grads"] = saved["sync_grads"] + ("BN-SYNC-WEIGHTED",)
        assert any("sync_grads declares BN-SYNC-WEIGHTED but never emitted it" in p
                   for p in lint_emissions(spec, emitted))
    finally:
        sync_checks.SYNC_EMITS.clear()
        sync_checks.SYNC_EMITS.update(saved)
    lying = {k: set(v) for k, v in emitted.items()}
    lying["y_train"].discard("BN-EPS-INSIDE")
    assert any("BN-EPS-INSIDE: its check 'y_train' (y_train) never emitted it" in p
               for p in lint_emissions(spec, lying))
    lying["y_train"].add("BN-FOLD")
    assert any("check y_train emitted BN-FOLD on the fixture grid but does not declare it" in p
               for p in lint_emissions(spec, lying))


def test_lint_catches_a_need_that_is_no_capability(spec, tmp_path):
    """A misspelt `needs` would make its clause unsupported for every implementation, silently."""
    import dataclasses

    from bnconf.spec.lint import lint
    clause = next(c for c in spec.clauses.values() if c.needs)
    broken = dataclasses.replace(spec, clauses={**spec.clauses, clause.id: dataclasses.replace(
        clause, needs=("running_stat",))})
    problems = lint(broken, [tmp_path])
    assert any(f"{clause.id}: needs 'running_stat'" in p for p in problems), problems
    assert not any("needs" in p for p in lint(spec, [tmp_path]))

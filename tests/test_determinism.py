"""Reproducible verdicts: case i of seed s is the same case whatever earlier cases returned,
and the same audit in two fresh directories gives the same records (timings aside)."""
import json
import os
import subprocess
import sys

import pytest

from bnconf.running.audit import audit_implementation
from bnconf.catalogs.faults import CORRECT, faulty
from bnconf.running.targets import numpy_implementation
from bnconf.spec.loader import get_spec
from bnconf.cases.focus import HIGH_KAPPA

TIMING_KEYS = {"elapsed_s", "wall_s", "seconds"}


def _audit(fn, name, seed, quota=15):
    spec = get_spec()
    impl = numpy_implementation(fn, name, "torch")
    return audit_implementation(impl, "cpu", spec, spec.profile("torch"), seed=seed, quota=quota, shrink_budget=0)


@pytest.mark.parametrize("fault", ["eps_outside_sqrt", "mutates_input", "wrong_feature_axis"])
def test_case_sequence_does_not_depend_on_outcomes(fault):
    """A correct and a faulty kernel emit different outcomes on almost every case (the faulty
    one fails clauses, its checks re-run variants); the generated cases must not follow them."""
    good = _audit(CORRECT["two_pass"], "correct", seed=3)
    bad = _audit(faulty(fault), fault, seed=3)
    assert any(t.failed for t in bad.tallies.values()), "the fault must produce findings for this test to mean much"
    assert (bad.cases, bad.sequence) == (good.cases, good.sequence)


def test_another_seed_draws_other_cases():
    a = _audit(CORRECT["two_pass"], "correct", seed=1)
    b = _audit(CORRECT["two_pass"], "correct", seed=2)
    assert a.sequence != b.sequence


def test_high_kappa_trait_matches_the_spec():
    assert HIGH_KAPPA == float(get_spec().tolerance["ill_conditioned_kappa"])


def _strip(rec):
    return {k: v for k, v in rec.items() if k not in TIMING_KEYS}


def _run_in(tmp, impl):
    out = tmp / "raw.jsonl"
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, "-m", "bnconf.frontends.cli", "run", "--impl", impl, "--out", str(out),
                           "--cases-per-clause", "20", "--repro-dir", str(tmp / "repro")],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return recs


@pytest.mark.slow
def test_same_audit_in_two_fresh_directories_gives_identical_records(tmp_path):
    pytest.importorskip("torch")
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = _run_in(a_dir, "torch.nn.functional.batch_norm")
    b = _run_in(b_dir, "torch.nn.functional.batch_norm")
    assert len(a) > 10
    # reproducer paths name their own run's folder: compare them relative to it
    norm = lambda recs, d: [json.loads(json.dumps(_strip(r)).replace(str(d), "<run>")) for r in recs]  # noqa: E731
    diff = [(x, y) for x, y in zip(norm(a, a_dir), norm(b, b_dir)) if x != y]
    assert len(a) == len(b) and not diff, diff[:2]
    for d in (a_dir, b_dir):   # no example database in the user's directory
        assert not (d / ".hypothesis").exists()

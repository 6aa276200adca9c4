"""Fault injection: crashes, hangs, kills and import errors in an implementation become
records and the audit goes on; writes are atomic; a killed run can resume."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnconf.results import records
from bnconf.results.known import load_known
from bnconf.spec.loader import SpecError

ROOT = Path(__file__).resolve().parent.parent
FAULTY = str(ROOT / "tests/faults/faulty_adapters.py")


def test_crash_hang_kill_and_import_error_become_records(tmp_path, monkeypatch):
    monkeypatch.setenv("BNCONF_ADAPTERS", FAULTY)
    from bnconf.running.registry import family_implementations
    from bnconf.running.runner import run_many
    impls = family_implementations("extra")
    out = tmp_path / "raw.jsonl"
    summary = run_many(impls, out, max_examples=3, timeout_s=8, repro_dir=str(tmp_path / "repro"),
                       echo=lambda m: None)
    assert [s["implementation"] for s in summary] == [i.name for i in impls]   # nobody stopped the run
    recs = {r["implementation"]: r for r in records.read_jsonl([out])}
    assert recs["fault.segfault"]["status"] == "error" and "SIGSEGV" in recs["fault.segfault"]["note"]
    assert recs["fault.hang"]["status"] == "error" and "timed out after 8 s" in recs["fault.hang"]["note"]
    assert recs["fault.oom_killed"]["status"] == "error" and "SIGKILL" in recs["fault.oom_killed"]["note"]
    assert recs["fault.import_error"]["status"] == "unsupported"
    assert "bnconf_framework_that_does_not_exist" in recs["fault.import_error"]["note"]
    left = subprocess.run(["pgrep", "-f", "bnconf.running.worker --impl fault."], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a worker process was left behind"


def test_resume_keeps_recorded_implementations(tmp_path, monkeypatch):
    monkeypatch.setenv("BNCONF_ADAPTERS", FAULTY)
    from bnconf.running.registry import find
    from bnconf.running.runner import run_many
    out = tmp_path / "raw.jsonl"
    records.append_jsonl(out, [{"implementation": "fault.import_error", "clause": "*", "status": "unsupported"}])
    seen = []
    run_many([find("fault.import_error")], out, max_examples=2, timeout_s=30, resume=True, echo=seen.append)
    assert any("already recorded" in m for m in seen)
    assert len(records.read_jsonl([out])) == 1


def test_atomic_write_leaves_the_previous_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    records.atomic_write_text(target, "old")

    def boom(*a):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        records.atomic_write_text(target, "new and half written")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_cut_jsonl_line_is_reported_not_fatal(tmp_path):
    p = tmp_path / "raw.jsonl"
    p.write_text(json.dumps({"implementation": "a", "clause": "BN-MEAN", "status": "pass"}) + "\n{\"implem")
    recs = records.read_jsonl([p])
    assert recs[0]["status"] == "pass" and recs[1]["status"] == "error" and f"{p}:2" in recs[1]["note"]


def test_every_shipped_known_deviation_file_is_valid(spec):
    from bnconf.results.known import known_dir
    for f in sorted(known_dir().glob("*.yaml")):
        load_known(f.stem, spec)


def test_malformed_spec_stops_before_any_run(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec_version: 1\nclauses: [\n")
    out = run_cli("--spec", str(bad), "run", "--family", "onnx", "--out", str(tmp_path / "r.jsonl"))
    assert out.returncode == 2 and f"{bad}:" in out.stderr and not (tmp_path / "r.jsonl").exists()


def test_same_seed_same_records(tmp_path):
    """Same commit, versions and seed: the same records, timings aside."""
    outs = []
    for i in range(2):
        out = tmp_path / f"raw{i}.jsonl"
        subprocess.run([sys.executable, "-m", "bnconf.running.worker", "--impl", "snippet.002.numpy", "--out", str(out),
                        "--max-examples", "20", "--seed", "7", "--repro-dir", str(tmp_path / f"repro{i}")],
                       check=True, cwd=ROOT, timeout=300)
        recs = records.read_jsonl([out])
        for r in recs:
            for k in ("elapsed_s", "wall_s", "reproducer"):
                r.pop(k, None)
        outs.append(recs)
    assert outs[0] == outs[1]
    other = tmp_path / "seed8.jsonl"
    subprocess.run([sys.executable, "-m", "bnconf.running.worker", "--impl", "snippet.002.numpy", "--out", str(other),
                    "--max-examples", "20", "--seed", "8", "--repro-dir", str(tmp_path / "r8")], check=True, cwd=ROOT,
                   timeout=300)
    assert [r.get("case") for r in records.read_jsonl([other])] != [r.get("case") for r in outs[0]]

"""`bnconf audit` on correct, buggy and misbehaving user code: verdicts, exit codes, and
messages that name the clause or protocol rule, never a traceback from bnconf."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAULTS = "tests/faults/user_functions.py"


def audit_json(run_cli, target, *extra):
    out = run_cli("audit", target, "--profile", "torch", "--json", "--max-examples", "30", *extra)
    assert "Traceback" not in out.stderr, out.stderr
    return out, (json.loads(out.stdout) if out.stdout.strip() else None)


@pytest.mark.clause("BN-NORMALIZE", "BN-MOMENTUM-BATCH-WEIGHT", "BN-RUNVAR-UNBIASED")
def test_correct_function_conforms(run_cli):
    out, rep = audit_json(run_cli, "examples/my_bn.py:batch_norm")
    assert out.returncode == 0 and rep["verdict"] == "conforms" and rep["violations"] == []
    assert set(rep) >= {"target", "profile", "verdict", "violations", "fingerprint"}
    assert rep["fingerprint"]["momentum_form"] == "batch_weight"
    assert rep["fingerprint"]["running_variance"] == "unbiased"
    assert rep["fingerprint"]["variance_algorithm"] == "stable"


@pytest.mark.clause("BN-EPS-INSIDE", "BN-MOMENTUM-BATCH-WEIGHT", "BN-RUNVAR-UNBIASED")
def test_buggy_function_violates_exactly_its_bugs(run_cli, tmp_path):
    out, rep = audit_json(run_cli, "examples/buggy_bn.py:batch_norm", "--repro-dir", str(tmp_path))
    assert out.returncode == 1 and rep["verdict"] == "violates"
    clauses = {v["clause"] for v in rep["violations"]}
    assert {"BN-EPS-INSIDE", "BN-MOMENTUM-BATCH-WEIGHT", "BN-RUNVAR-UNBIASED"} <= clauses
    assert clauses <= {"BN-EPS-INSIDE", "BN-MOMENTUM-BATCH-WEIGHT", "BN-RUNVAR-UNBIASED", "BN-ONE-VALUE",
                       "BN-EMPTY-BATCH"}, "no cascade of secondary findings"
    v = next(v for v in rep["violations"] if v["clause"] == "BN-EPS-INSIDE")
    assert "outside_sqrt" in v["message"] and v["example"]["shape"]
    assert rep["fingerprint"]["eps_placement"] == "outside_sqrt"
    assert rep["fingerprint"]["momentum_form"] == "old_weight"


@pytest.mark.clause("BN-NORMALIZE", "BN-DTYPE-OUTPUT", "BN-PURE")
@pytest.mark.parametrize("name, clause, words", [
    ("raises", "BN-NORMALIZE", "RuntimeError"),
    ("returns_none", "BN-NORMALIZE", "must return (y, new_running_mean, new_running_var)"),
    ("wrong_shape", "BN-DTYPE-OUTPUT", "for a float"),
    ("returns_nan", "BN-NORMALIZE", "nan"),
    ("mutates_input", "BN-PURE", "mutated"),
    ("wrong_dtype", "BN-DTYPE-OUTPUT", "float"),
])
def test_misbehaving_functions_become_named_violations(run_cli, name, clause, words):
    out, rep = audit_json(run_cli, f"{FAULTS}:{name}", "--no-fingerprint")
    assert out.returncode == 1
    msgs = {v["clause"]: v["message"] for v in rep["violations"]}
    assert clause in msgs and words.lower() in msgs[clause].lower()


def test_printing_function_does_not_corrupt_json(run_cli):
    out, rep = audit_json(run_cli, f"{FAULTS}:prints", "--no-fingerprint")
    assert rep["verdict"] == "conforms", rep["violations"]  # parsed at all: stdout stayed clean


@pytest.mark.clause("BN-NORMALIZE")
def test_slow_function_is_stopped_by_the_call_time_limit():
    import time
    import bnconf
    t0 = time.perf_counter()
    rep = bnconf.audit(f"{ROOT}/{FAULTS}:slow", "torch", max_examples=3, timeout=0.5, fingerprint=False,
                       shrink_budget=0)
    assert rep.verdict == "violates" and time.perf_counter() - t0 < 60
    assert any("did not return within 0.5 s" in v["message"] for v in rep.violations)


@pytest.mark.parametrize("target, words", [
    ("nope.py:batch_norm", "not found"),
    ("examples/my_bn.py:missing", "has no attribute 'missing'"),
    (f"{FAULTS}:not_callable", "is not callable"),
    ("no_colon_here", "must be 'path/to/file.py:NAME'"),
    ("tests/faults/syntax_error.py:f", "syntax error"),
])
def test_bad_targets_exit_2_with_a_message(run_cli, tmp_path, target, words):
    (ROOT / "tests/faults/syntax_error.py").write_text("def f(:\n")
    try:
        out = run_cli("audit", target, "--profile", "torch")
    finally:
        (ROOT / "tests/faults/syntax_error.py").unlink()
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr


def test_unknown_profile_exits_2(run_cli):
    out = run_cli("audit", "examples/my_bn.py:batch_norm", "--profile", "pytorch")
    assert out.returncode == 2 and "unknown profile 'pytorch'" in out.stderr


@pytest.mark.clause("BN-EPS-INSIDE")
def test_reproducer_runs_standalone_and_shows_the_failure(run_cli, tmp_path):
    import subprocess
    import sys
    out, rep = audit_json(run_cli, "examples/buggy_bn.py:batch_norm", "--repro-dir", str(tmp_path))
    v = next(v for v in rep["violations"] if v["clause"] == "BN-EPS-INSIDE")
    script = Path(v["reproducer"]) / "repro.py"
    text = script.read_text()
    assert "import bnconf" not in text and "from bnconf" not in text
    res = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1 and "FAIL" in res.stdout and "BN-EPS-INSIDE" in res.stdout


@pytest.mark.clause("BN-MOMENTUM-OLD-WEIGHT")
def test_torch_module_kind_audits_a_module_class(run_cli, tmp_path):
    mod = tmp_path / "mod.py"
    mod.write_text("import torch\n\nclass KerasStyle(torch.nn.BatchNorm1d):\n"
                   "    def __init__(self, n):\n        super().__init__(n, momentum=0.01, eps=1e-3)\n")
    out = run_cli("audit", f"{mod}:KerasStyle", "--profile", "keras", "--kind", "torch-module", "--json",
                  "--max-examples", "25", "--no-fingerprint")
    rep = json.loads(out.stdout)
    clauses = {v["clause"] for v in rep["violations"]}
    # a torch module judged under the keras profile: unbiased running variance is a violation
    assert "BN-RUNVAR-BIASED" in clauses

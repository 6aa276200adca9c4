"""User code runs apart from the audit, and Ctrl-C stops the audit: a function that kills its
process (segfault, os._exit, SIGKILL) or hangs in C is a violation naming the clause and the
case; SIGINT ends `bnconf audit`, `bnconf run` and the pytest plugin within a second or two,
with exit 130, no verdict, no process left and nothing half-written."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
KILLERS = "tests/faults/process_killers.py"
FAULTY_ADAPTERS = str(ROOT / "tests/faults/faulty_adapters.py")
BNCONF = [sys.executable, "-m", "bnconf.frontends.cli"]


def _alive(pid: int) -> bool:
    """A zombie nobody reaps counts as gone: it runs nothing and holds nothing but its pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _workers(path) -> list[int]:
    """The live bnconf.running.worker processes writing under `path` (a temporary folder of one test)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "bnconf.running.worker" in cmd and f"--out {path}" in cmd and _alive(int(d.name)):
                out.append(int(d.name))
    return out


def _descendants(pid: int) -> list[int]:
    kids = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(next(line for line in (d / "status").read_text().splitlines()
                                if line.startswith("PPid:")).split()[1])
            except (OSError, StopIteration, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _audit(target, *extra, env=None, timeout=300):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([*BNCONF, "audit", target, "--profile", "torch", "--json", "--no-fingerprint",
                           "--cases-per-clause", "20", *extra], cwd=ROOT, capture_output=True, text=True,
                          env=e, timeout=timeout)


def _violation(out, words: str) -> dict:
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    rep = json.loads(out.stdout)
    assert rep["verdict"] == "violates"
    hits = [v for v in rep["violations"] if words in v["message"]]
    assert hits, rep["violations"]
    assert hits[0]["clause"].startswith("BN-") and hits[0]["example"]["shape"]
    return hits[0]


@pytest.mark.clause("BN-NORMALIZE")
@pytest.mark.parametrize("name, rank, words", [
    ("segfaults_on_rank3", 3, "died with SIGSEGV during forward (train)"),
    ("exits_on_rank4", 4, "exited with status 0 during forward (train)"),
    ("sigkills_itself_on_rank5", 5, "died with SIGKILL (as the OOM killer does) during forward"),
])
def test_a_function_that_kills_its_process_is_a_violation_and_the_audit_goes_on(name, rank, words):
    out = _audit(f"{KILLERS}:{name}")
    assert out.returncode not in (0, 139, -11), out.stderr[-2000:]
    v = _violation(out, words)
    assert v["clause"] == "BN-NORMALIZE" and len(v["example"]["shape"]) == rank
    assert "Traceback" not in out.stderr
    assert json.loads(out.stdout)["cases"] > 100     # it went on after the first death


def test_a_segfault_names_the_line_of_the_users_code():
    v = _violation(_audit(f"{KILLERS}:segfaults_on_rank3"), "SIGSEGV")
    assert f"last frame: {KILLERS}:" in v["message"] and "in segfaults_on_rank3" in v["message"]


@pytest.mark.clause("BN-NORMALIZE")
def test_a_hang_no_signal_handler_can_end_is_killed_and_is_a_violation(tmp_path):
    marker = tmp_path / "hung.pid"
    t0 = time.monotonic()
    out = _audit(f"{KILLERS}:hangs_once_in_c", env={"BNCONF_CALL_TIMEOUT_S": "1", "BNCONF_TEST_MARKER": str(marker)})
    v = _violation(out, "did not return within 1 s")
    assert "the process was killed" in v["message"] and len(v["example"]["shape"]) == 3
    assert time.monotonic() - t0 < 120
    assert not _alive(int(marker.read_text())), "the hung process was left behind"


def test_a_keyboard_interrupt_raised_by_the_users_code_is_its_violation_not_a_ctrl_c():
    """The user's code raising KeyboardInterrupt is that code failing on a valid input: a
    violation of the clause being exercised, with its own type name, and the audit goes on to a
    verdict. Only a SIGINT to bnconf stops the audit (its processes ignore SIGINT)."""
    out = _audit(f"{KILLERS}:raises_keyboard_interrupt_on_rank3")
    v = _violation(out, "KeyboardInterrupt in train_0")
    assert "raised by the implementation's own code" in v["message"] and "interrupted" not in out.stderr


def test_the_python_api_isolates_user_code():
    import bnconf
    rep = bnconf.audit(f"{ROOT}/{KILLERS}:segfaults_on_rank3", "torch", quota=20, fingerprint=False,
                       shrink_budget=3)
    assert rep.verdict == "violates"
    assert any("SIGSEGV" in v["message"] for v in rep.violations)


def test_the_pytest_plugin_isolates_user_code(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--pyargs", "bnconf.suite",
                          "--bnconf-target", f"{KILLERS}:sigkills_itself_on_rank5", "--bnconf-profile", "torch",
                          "--bnconf-cases-per-clause", "20"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-2000:]
    assert "BN-NORMALIZE" in out.stdout and "SIGKILL" in out.stdout


# ------------------------------------------------------------------ the proxy itself
PARAMS = {"num_features": 3, "feature_axis": 1, "rank": 3, "dtype": "float32", "momentum": 0.1, "eps": 1e-5,
          "affine": "default", "weight": None, "bias": None, "track_running_stats": True,
          "memory_format": "contiguous"}


def test_errors_cross_with_their_type_and_a_dead_process_is_replaced():
    from bnconf.adapters._protocol import Unsupported
    from bnconf.running.isolated import ProcessDied, isolated_implementation
    impl = isolated_implementation(f"{KILLERS}:segfaults_on_rank3", "torch")
    with pytest.raises(Unsupported):            # the engine tells a capability from a failure by this class
        impl.build(dict(PARAMS, momentum="default"), "cpu").running_stats()
    good = impl.build(dict(PARAMS, rank=2), "cpu")
    y = good.forward(np.ones((4, 3), np.float32), True, None)["y"]
    assert y.shape == (4, 3) and good.running_stats()[0].shape == (3,)
    with pytest.raises(Exception) as e:
        good.forward(np.ones((1, 3), np.float32), True, None)   # one value per channel: the function raises
    assert type(e.value).__name__ == "ValueError" and "more than 1 value" in str(e.value)
    bad = impl.build(PARAMS, "cpu")
    with pytest.raises(ProcessDied, match="SIGSEGV during forward"):
        bad.forward(np.ones((4, 3, 2), np.float32), True, None)
    with pytest.raises(ProcessDied, match="SIGSEGV during forward"):   # its instances died with it
        good.running_stats()
    fresh = impl.build(dict(PARAMS, rank=2), "cpu")
    assert fresh.forward(np.ones((4, 3), np.float32), True, None)["y"].shape == (4, 3)
    impl.close()


def test_a_mutated_input_is_seen_by_the_audit():
    from bnconf.running.isolated import isolated_implementation
    inst = isolated_implementation("tests/faults/user_functions.py:mutates_input", "torch").build(PARAMS, "cpu")
    x = np.ones((4, 3, 2), np.float32)
    inst.forward(x, True, None)
    assert np.all(x == 0)          # as it is in one process: trace.py compares it with its copy (BN-PURE)


def test_a_call_costs_well_under_a_millisecond_more_than_in_process():
    from bnconf.running.targets import load_implementation
    from bnconf.running.isolated import isolated_implementation
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)

    def median_ms(impl):
        inst = impl.build(dict(PARAMS, rank=2), "cpu")
        ts = []
        for _ in range(600):
            t = time.perf_counter()
            inst.forward(x, True, None)
            inst.running_stats()
            ts.append(time.perf_counter() - t)
        return 1e3 * sorted(ts[100:])[len(ts[100:]) // 2]
    local = median_ms(load_implementation("examples/my_bn.py:batch_norm", "torch"))
    apart = median_ms(isolated_implementation("examples/my_bn.py:batch_norm", "torch"))
    assert apart - local < 1.0, (local, apart)


def test_a_target_that_cannot_load_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import ctypes\nctypes.string_at(0)\n")
    out = subprocess.run([*BNCONF, "audit", f"{bad}:f", "--profile", "torch"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "SIGSEGV" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------ Ctrl-C
def _ignoring_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # as a shell starts `cmd &`


def _interrupt(cmd, *, after_s=3.0, ready=None, env=None, ignore_sigint=False):
    """Start cmd, send SIGINT when `ready()` (or after `after_s`), return (result, seconds to exit,
    the pids of the processes it had started)."""
    e = dict(os.environ, **(env or {}))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                            preexec_fn=_ignoring_sigint if ignore_sigint else None)
    t0 = time.monotonic()
    while time.monotonic() - t0 < (120 if ready else after_s):
        if ready and ready():
            break
        time.sleep(0.1)
    started = _descendants(proc.pid)
    assert proc.poll() is None, "it finished before the interrupt"
    proc.send_signal(signal.SIGINT)
    t1 = time.monotonic()
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), time.monotonic() - t1, started


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["terminal", "background-job"])
def test_ctrl_c_stops_an_audit_with_no_verdict(ignore_sigint):
    """background-job: a shell starts `cmd &` with SIGINT ignored; `kill -INT` must still stop it."""
    out, took, started = _interrupt([*BNCONF, "audit", "examples/my_bn.py:batch_norm", "--profile", "torch",
                                     "--cases-per-clause", "2000"], ignore_sigint=ignore_sigint)
    assert out.returncode == 130 and took < 2.0, (out.returncode, took, out.stderr[-2000:])
    assert "interrupted" in out.stderr and "CONFORMS" not in out.stdout and out.stdout.strip() == ""
    assert started and not [p for p in started if _alive(p)], "a process of the audit was left behind"


def test_ctrl_c_stops_a_run_and_resume_completes_it(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "raw.jsonl"
    cmd = [*BNCONF, "run", "--impl", "torch.nn.functional.batch_norm", "--out", str(out),
           "--repro-dir", str(tmp_path / "repro")]
    res, took, started = _interrupt(cmd, ready=lambda: bool(_workers(tmp_path)))
    assert res.returncode == 130 and took < 2.0, (res.returncode, took, res.stderr[-2000:])
    assert "interrupted" in res.stderr and "--resume" in res.stderr
    assert started and not [p for p in started if _alive(p)], "a worker was left behind"
    assert not out.exists() and not list(tmp_path.glob(".*.part")), "something half-done was written"
    assert json.loads((tmp_path / "raw.jsonl.incomplete").read_text())["not_done"] == ["torch.nn.functional.batch_norm"]
    done = subprocess.run(cmd + ["--resume", "--cases-per-clause", "5", "--max-examples", "40"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["implementation"] for r in recs} == {"torch.nn.functional.batch_norm"}
    assert not (tmp_path / "raw.jsonl.incomplete").exists()


def test_ctrl_c_keeps_the_implementations_already_recorded(tmp_path):
    out = tmp_path / "raw.jsonl"
    cmd = [*BNCONF, "run", "--impl", "fault.import_error", "--impl", "fault.hang", "--jobs", "1",
           "--out", str(out), "--repro-dir", str(tmp_path / "repro")]
    env = {"BNCONF_ADAPTERS": FAULTY_ADAPTERS}
    res, took, started = _interrupt(cmd, env=env, ready=lambda: out.exists() and bool(_workers(tmp_path)))
    assert res.returncode == 130 and took < 2.0, (res.returncode, took, res.stderr[-2000:])
    assert started and not [p for p in started if _alive(p)], "the hung worker was left behind"
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["implementation"] for r in recs] == ["fault.import_error"]
    done = subprocess.run(cmd + ["--resume", "--timeout", "3"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=120)
    assert done.returncode == 0 and "fault.import_error: already recorded, skipped" in done.stdout
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["implementation"] for r in recs] == ["fault.import_error", "fault.hang"]


def test_ctrl_c_stops_the_pytest_plugin(tmp_path):
    pytest.importorskip("torch")
    raw = tmp_path / "raw" / "torch.jsonl"
    res, took, started = _interrupt([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--pyargs",
                               "bnconf.suite", "--bnconf-impl", "torch.nn.functional.batch_norm", "--bnconf-raw",
                               str(raw)], ready=lambda: bool(_workers(raw.parent)))
    assert res.returncode == 2 and took < 3.0, (res.returncode, took, res.stdout[-2000:])
    assert "Interrupted" in res.stdout or "KeyboardInterrupt" in res.stdout
    assert started and not [p for p in started if _alive(p)], "a worker was left behind"


def test_a_dead_template_is_replaced_by_a_fresh_load():
    from bnconf.running.isolated import ProcessDied, isolated_implementation
    impl = isolated_implementation("examples/my_bn.py:batch_norm", "torch")
    first = impl.build(dict(PARAMS, rank=2), "cpu")
    first.running_stats()
    os.kill(impl._procs.template.proc.pid, signal.SIGKILL)   # what the OOM killer may choose
    t0 = time.monotonic()
    while _alive(first.child.pid) and time.monotonic() - t0 < 10:
        time.sleep(0.01)
    with pytest.raises(ProcessDied, match="during forward"):  # its implementation process died with it
        first.forward(np.ones((4, 3), np.float32), True, None)
    again = impl.build(dict(PARAMS, rank=2), "cpu")
    assert again.forward(np.ones((4, 3), np.float32), True, None)["y"].shape == (4, 3)
    impl.close()


def test_a_torch_module_runs_apart_when_this_process_has_run_torch(tmp_path):
    torch = pytest.importorskip("torch")
    torch.ones(256, 256) @ torch.ones(256, 256)       # this process has torch's thread pools running
    mod = tmp_path / "crashy.py"
    mod.write_text("import ctypes\nimport torch\n\nclass Crashy(torch.nn.BatchNorm1d):\n"
                   "    def forward(self, x):\n        if x.dim() == 4:\n            ctypes.string_at(0)\n"
                   "        return super().forward(x)\n")
    import bnconf
    rep = bnconf.audit(f"{mod}:Crashy", "torch", kind="torch-module", quota=20, fingerprint=False, shrink_budget=3)
    assert any("SIGSEGV" in v["message"] and "crashy.py:7 in forward" in v["message"] for v in rep.violations)

"""Run implementations each in its own process with a time limit (BN-... results never
depend on another implementation surviving). A crash, a hang, an out-of-memory kill or an
import error becomes an `error` record with the message, and the run goes on."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import records as rec_mod


def done_implementations(out: Path) -> set[str]:
    return {r.get("implementation") for r in rec_mod.read_jsonl([out]) if r.get("status") != "error"}


def _part_path(out: Path, name: str) -> Path:
    import re
    return out.parent / f".{out.name}.{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.part"


# TF's inter-op pool is left alone: MirroredStrategy's replicas and collectives run on it.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def worker_env() -> dict:
    """One compute thread per worker unless the user set their own. BN cases are small tensors,
    and workers run side by side: with a thread pool per core in every worker, OpenMP's spin
    waits oversubscribe the cores (measured: torch.nn.BatchNorm2d's worker took 88 s with the
    default pool beside another worker, 6.6 s with one thread). Parallelism comes from workers."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env.setdefault(var, "1")
    return env


def run_one(name: str, family: str, profile: str, out: Path, *, max_examples: int | None, seed: int,
            timeout_s: float, repro_dir: str, spec: str | None = None, devices: str = "all",
            quota: int | None = None, lock=None) -> dict:
    """One worker process. It writes to a part file of its own, merged into `out` (under
    `lock` when workers run side by side) once it is done, so concurrent workers never
    interleave lines."""
    part = _part_path(Path(out), name)
    part.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bnconf.worker", "--impl", name, "--out", str(part), "--seed", str(seed),
           "--repro-dir", repro_dir, "--devices", devices]
    if max_examples:
        cmd += ["--max-examples", str(max_examples)]
    if quota:
        cmd += ["--cases-per-clause", str(quota)]
    if spec:
        cmd += ["--spec", spec]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=worker_env())
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
        status, message = None, None
        if proc.returncode != 0:
            sig = -proc.returncode if proc.returncode < 0 else None
            why = f"killed by signal {signal.Signals(sig).name}" if sig else f"exit status {proc.returncode}"
            status, message = "error", f"worker {why}: {stderr.strip()[-1500:]}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: no process is left behind
        proc.communicate()
        status, message = "error", f"timed out after {timeout_s:.0f} s (killed)"
    wall = time.perf_counter() - t0
    recs = rec_mod.read_jsonl([part])
    part.unlink(missing_ok=True)
    if status:
        rec = rec_mod.status_record(name, family, profile, {}, "cpu", "*", "*", status, message)
        rec["wall_s"] = round(wall, 3)
        recs.append(rec)
    if lock is not None:
        with lock:
            rec_mod.append_jsonl(out, recs)
    else:
        rec_mod.append_jsonl(out, recs)
    return {"implementation": name, "seconds": wall, "records": len(recs),
            "bad": sum(1 for r in recs if r.get("status") in rec_mod.BAD)}


def default_jobs() -> int:
    """Workers side by side: BNCONF_JOBS, else one per core (each worker is one process,
    most of whose time is one framework thread on small arrays)."""
    return max(1, int(os.environ.get("BNCONF_JOBS") or os.cpu_count() or 1))


def run_many(impls: list, out: Path, *, max_examples=None, seed=0, timeout_s=600.0, repro_dir="reports/repro",
             resume=False, spec=None, devices="all", echo=print, quota=None, jobs=None) -> list[dict]:
    import threading
    from concurrent.futures import ThreadPoolExecutor
    out = Path(out)
    if not resume and out.exists():
        out.unlink()
    skip = done_implementations(out) if resume else set()
    todo = []
    for impl in impls:
        if impl.name in skip:
            echo(f"{impl.name}: already recorded, skipped (--resume)")
        else:
            todo.append(impl)
    lock = threading.Lock()

    def one(impl):
        echo(f"{impl.name}: auditing ...")
        s = run_one(impl.name, impl.family, impl.profile, out, max_examples=max_examples, seed=seed,
                    timeout_s=timeout_s, repro_dir=repro_dir, spec=spec, devices=devices, quota=quota, lock=lock)
        echo(f"{impl.name}: {s['records']} records, {s['bad']} unexpected, {s['seconds']:.1f} s")
        return s
    with ThreadPoolExecutor(max_workers=jobs or default_jobs()) as pool:
        return list(pool.map(one, todo))


def summarize(out: Path) -> str:
    recs = rec_mod.read_jsonl([out])
    counts: dict = {}
    for r in recs:
        counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
    return json.dumps(counts, sort_keys=True)

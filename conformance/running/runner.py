"""Run implementations each in its own process with a time limit (BN-... results never
depend on another implementation surviving). A crash, a hang, an out-of-memory kill or an
import error becomes an `error` record with the message, and the run goes on."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bnconf.results import records as rec_mod
from bnconf.results.provenance import stamp


def done_implementations(out: Path) -> set[str]:
    return {r.get("implementation") for r in rec_mod.read_jsonl([out]) if r.get("status") != "error"}


def _part_path(out: Path, name: str) -> Path:
    return out.parent / f".{out.name}.{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.part"


# TF's inter-op pool is left alone: MirroredStrategy's replicas and collectives run on it.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def worker_env() -> dict:
    """One compute thread per worker unless the user set their own. BN cases are small tensors,
    and workers run side by side: with a thread pool per core in every worker, OpenMP's spin
    waits oversubscribe the cores and a worker runs many times slower than with one thread.
    Parallelism comes from workers."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env.setdefault(var, "1")
    return env


class _Workers:
    """The worker processes running now, so that Ctrl-C kills them all at once. Each leads its
    own session: a terminal's Ctrl-C never reaches it, and killing its group takes whatever it
    started. After stop() no worker starts and none that was killed is merged."""

    def __init__(self):
        self.lock, self.procs, self.stopped = threading.Lock(), set(), False

    def start(self, cmd: list):
        with self.lock:
            if self.stopped:
                return None
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True, env=worker_env())
            self.procs.add(proc)
            return proc

    def finished(self, proc) -> None:
        with self.lock:
            self.procs.discard(proc)

    def stop(self) -> None:
        with self.lock:
            self.stopped, procs = True, list(self.procs)
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def run_one(name: str, family: str, profile: str, out: Path, *, max_examples: int | None, seed: int,
            timeout_s: float, repro_dir: str, spec: str | None = None, devices: str = "all",
            quota: int | None = None, lock=None, workers: _Workers | None = None) -> dict | None:
    """One worker process. It writes to a part file of its own, merged into `out` (under
    `lock` when workers run side by side) once it is done, so concurrent workers never
    interleave lines. None when `workers` was stopped before this one finished: nothing of
    it is merged (a resumed run audits it again)."""
    part = _part_path(Path(out), name)
    part.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bnconf.running.worker", "--impl", name, "--out", str(part), "--seed", str(seed),
           "--repro-dir", repro_dir, "--devices", devices]
    if max_examples:
        cmd += ["--max-examples", str(max_examples)]
    if quota:
        cmd += ["--cases-per-clause", str(quota)]
    if spec:
        cmd += ["--spec", spec]
    workers = workers or _Workers()
    t0 = time.perf_counter()
    proc = workers.start(cmd)
    if proc is None:
        return None
    try:
        status, message = _wait(proc, timeout_s)
    finally:
        workers.finished(proc)
    if workers.stopped and proc.returncode != 0:
        part.unlink(missing_ok=True)
        return None
    wall = time.perf_counter() - t0
    recs = rec_mod.read_jsonl([part])
    part.unlink(missing_ok=True)
    if status:
        rec = stamp(rec_mod.status_record(name, family, profile, {}, "cpu", "*", "*", status, message))
        rec["wall_s"] = round(wall, 3)
        recs.append(rec)
    if lock is not None:
        with lock:
            rec_mod.append_jsonl(out, recs)
    else:
        rec_mod.append_jsonl(out, recs)
    return {"implementation": name, "seconds": wall, "records": len(recs),
            "bad": sum(1 for r in recs if r.get("status") in rec_mod.BAD)}


def _wait(proc, timeout_s: float) -> tuple:
    """(status, message) of a worker that failed, (None, None) of one that finished."""
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: no process is left behind
        proc.communicate()
        return "error", f"timed out after {timeout_s:.0f} s (killed)"
    if proc.returncode == 0:
        return None, None
    sig = -proc.returncode if proc.returncode < 0 else None
    why = f"killed by signal {signal.Signals(sig).name}" if sig else f"exit status {proc.returncode}"
    return "error", f"worker {why}: {stderr.strip()[-1500:]}"


def default_jobs() -> int:
    """Workers side by side: BNCONF_JOBS, else one per core (each worker is one process,
    most of whose time is one framework thread on small arrays)."""
    return max(1, int(os.environ.get("BNCONF_JOBS") or os.cpu_count() or 1))


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during run_many: every worker was killed, `out` keeps the implementations merged
    before it, and `not_done` (also in the `.incomplete` file beside `out`) were not recorded."""

    def __init__(self, out: Path, not_done: list):
        super().__init__(f"interrupted: {len(not_done)} implementation(s) not recorded in {out}")
        self.out, self.not_done = out, not_done


def incomplete_path(out: Path) -> Path:
    """Beside the records (not *.jsonl, so no report reads it as records): what an interrupted
    run left undone; removed when a run, resumed or not, finishes."""
    return Path(out).with_name(Path(out).name + ".incomplete")


def run_many(impls: list, out: Path, *, max_examples=None, seed=0, timeout_s=600.0, repro_dir="reports/repro",
             resume=False, spec=None, devices="all", echo=print, quota=None, jobs=None) -> list[dict]:
    """Raises RunInterrupted (a KeyboardInterrupt) on Ctrl-C, within a second: the pytest
    plugin and tox stop, and `bnconf run --resume` continues with what was not recorded."""
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
    lock, workers = threading.Lock(), _Workers()

    def one(impl):
        if workers.stopped:
            return None
        echo(f"{impl.name}: auditing ...")
        s = run_one(impl.name, impl.family, impl.profile, out, max_examples=max_examples, seed=seed,
                    timeout_s=timeout_s, repro_dir=repro_dir, spec=spec, devices=devices, quota=quota, lock=lock,
                    workers=workers)
        if s is not None:
            echo(f"{impl.name}: {s['records']} records, {s['bad']} unexpected, {s['seconds']:.1f} s")
        return s
    pool = ThreadPoolExecutor(max_workers=jobs or default_jobs())
    futures = [pool.submit(one, impl) for impl in todo]
    try:
        summary = [f.result() for f in futures]
    except BaseException as exc:
        workers.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        not_done = [i.name for i, f in zip(todo, futures) if f.cancelled() or f.exception() or f.result() is None]
        rec_mod.atomic_write_text(incomplete_path(out), json.dumps({"not_done": not_done}, indent=1) + "\n")
        if isinstance(exc, KeyboardInterrupt):
            raise RunInterrupted(out, not_done) from None
        raise
    pool.shutdown()
    incomplete_path(out).unlink(missing_ok=True)
    return summary


def summarize(out: Path) -> str:
    recs = rec_mod.read_jsonl([out])
    counts: dict = {}
    for r in recs:
        counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
    return json.dumps(counts, sort_keys=True)

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


def run_one(name: str, family: str, profile: str, out: Path, *, max_examples: int, seed: int, timeout_s: float,
            repro_dir: str, spec: str | None = None, devices: str = "all") -> dict:
    cmd = [sys.executable, "-m", "bnconf.worker", "--impl", name, "--out", str(out), "--max-examples",
           str(max_examples), "--seed", str(seed), "--repro-dir", repro_dir, "--devices", devices]
    if spec:
        cmd += ["--spec", spec]
    t0 = time.perf_counter()
    before = len(rec_mod.read_jsonl([out]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
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
    if status:
        rec = rec_mod.status_record(name, family, profile, {}, "cpu", "*", "*", status, message)
        rec["wall_s"] = round(wall, 3)
        rec_mod.append_jsonl(out, [rec])
    after = rec_mod.read_jsonl([out])[before:]
    return {"implementation": name, "seconds": wall, "records": len(after),
            "bad": sum(1 for r in after if r.get("status") in rec_mod.BAD)}


def run_many(impls: list, out: Path, *, max_examples=100, seed=0, timeout_s=600.0, repro_dir="reports/repro",
             resume=False, spec=None, devices="all", echo=print) -> list[dict]:
    out = Path(out)
    if not resume and out.exists():
        out.unlink()
    skip = done_implementations(out) if resume else set()
    summary = []
    for impl in impls:
        if impl.name in skip:
            echo(f"{impl.name}: already recorded, skipped (--resume)")
            continue
        echo(f"{impl.name}: auditing ...")
        s = run_one(impl.name, impl.family, impl.profile, out, max_examples=max_examples, seed=seed,
                    timeout_s=timeout_s, repro_dir=repro_dir, spec=spec, devices=devices)
        echo(f"{impl.name}: {s['records']} records, {s['bad']} unexpected, {s['seconds']:.1f} s")
        summary.append(s)
    return summary


def summarize(out: Path) -> str:
    recs = rec_mod.read_jsonl([out])
    counts: dict = {}
    for r in recs:
        counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
    return json.dumps(counts, sort_keys=True)

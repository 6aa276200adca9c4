"""`bnconf bench`: where the time goes, and what the default audit catches.

Per importable implementation: the framework's own time per case, the oracle-side time
(oracle, tolerance model, comparisons), the harness time (generation, materializing,
trace bookkeeping, recording), cases per second and the overhead ratio
harness / (framework + oracle). Then `bnconf audit` on a correct function (wall time, peak
memory), time to the first violation on a faulty one, and detection power over the seeded
fault catalog (bnconf.catalogs.faults), with 0 false findings required on correct kernels.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bnconf.adapters._protocol import Implementation
from bnconf.catalogs.faults import CATALOG, CORRECT_FORMS, FORMS, faulty
from bnconf.catalogs.sync_faults import SYNC_FAULTS, implementation
from bnconf.frontends.user_audit import audit
from bnconf.results.provenance import project_root
from bnconf.results.records import atomic_write_text
from bnconf.running.audit import audit_implementation
from bnconf.running.registry import all_implementations, find
from bnconf.running.runner import worker_env  # the audit's own thread settings
from bnconf.running.sync_audit import audit_sync
from bnconf.running.targets import numpy_implementation
from bnconf.spec.loader import get_spec


class _Timer:
    def __init__(self):
        self.s = 0.0

    def wrap(self, fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.s += time.perf_counter() - t
        return run


def _timed_impl(impl, timer):

    class Timed:
        def __init__(self, inst):
            self.inst = inst
            self.forward = timer.wrap(inst.forward)
            self.running_stats = timer.wrap(inst.running_stats)
            self.counter = timer.wrap(inst.counter)
    build = timer.wrap(impl.build)
    return Implementation(impl.name, impl.profile, impl.capabilities, lambda p, d: Timed(build(p, d)),
                          impl.versions, impl.devices, impl.family)


def split_times(impl, spec, quota=100, seed=0) -> dict:
    """One in-process audit at the default quota, its time split three ways, plus the floor:
    the framework's own call on a typical case (float32, (8, 16), one training step)."""
    fw, orc = _Timer(), _Timer()

    @contextlib.contextmanager
    def checks_time():   # the checks' re-runs of the implementation are framework time, not oracle time
        before_fw, t = fw.s, time.perf_counter()
        try:
            yield
        finally:
            orc.s += time.perf_counter() - t - (fw.s - before_fw)
    res = audit_implementation(_timed_impl(impl, fw), "cpu", spec, spec.profile(impl.profile),
                               seed=seed, shrink_budget=0, quota=quota, timing=checks_time)
    harness = max(res.seconds - fw.s - orc.s, 0.0)
    per = res.cases or 1
    counts = (res.quota or {}).get("counts", {})
    return {"implementation": impl.name, "cases": res.cases, "total_s": round(res.seconds, 3),
            "typical_call_ms": round(_typical_call(impl) * 1e3, 3),
            "framework_s_per_case": round(fw.s / per, 5), "oracle_s_per_case": round(orc.s / per, 5),
            "harness_s_per_case": round(harness / per, 5), "cases_per_s": round(per / res.seconds, 2),
            "overhead_ratio": round(harness / max(fw.s + orc.s, 1e-9), 3),
            "min_cases_per_clause": min(counts.values()) if counts else None}


def _typical_call(impl, repeat=20) -> float:
    """Median seconds of one training-mode forward and backward on a float32 (8, 16) batch,
    after a warm-up call: the floor no harness can go under."""
    import numpy as np
    caps = impl.capabilities
    rank = 2 if 2 in caps.ranks else min(caps.ranks)
    shape = [8] + [2] * (rank - 2) + [16]
    fa = rank - 1 if "last" in caps.feature_axes else 1
    if fa == 1:
        shape = [8, 16] + [2] * (rank - 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    params = {"num_features": 16, "feature_axis": fa, "rank": rank, "dtype": "float32",
              "momentum": 0.1 if caps.explicit_momentum else "default", "eps": 1e-5,
              "affine": "random", "weight": np.ones(16, np.float32), "bias": np.zeros(16, np.float32),
              "track_running_stats": True, "memory_format": "contiguous"}
    dy = x if caps.grads else None
    times = []
    for i in range(repeat + 1):
        inst = impl.build(params, "cpu")
        t = time.perf_counter()
        inst.forward(x, True, dy)
        if i:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def detection(quota=100, fault_seeds=range(10), correct_seeds=range(50), echo=print) -> list[dict]:
    """Every seeded fault, in each form of the catalog, through the default audit (quota cases
    per clause) at each seed: the clauses it is reported under (violations and warnings,
    blocked dependents apart) against exactly the catalog's, and how many cases the first
    violation needed; every correct kernel's findings at each seed (there must be none)."""
    rows = []
    for form in FORMS:
        for name, (desc, wants) in CATALOG.items():
            if form not in wants:
                continue
            want = wants[form]
            row = {"fault": name, "form": form, "what": desc, "expected": sorted(want), "seeds": len(fault_seeds),
                   "exact_at": [], "extra": {}, "missing": {}, "first_violation_case": None}
            t = time.perf_counter()
            for seed in fault_seeds:
                rep = audit(None, form, impl=numpy_implementation(faulty(name, form), f"fault_catalog:{form}:{name}",
                                                                  form),
                            quota=quota, seed=seed, fingerprint=False, shrink_budget=0)
                got = {v["clause"] for v in rep.violations + rep.warnings}
                if got == want:
                    row["exact_at"].append(seed)
                for c in got - want:
                    row["extra"].setdefault(c, []).append(seed)
                for c in want - got:
                    row["missing"].setdefault(c, []).append(seed)
            row["seconds"] = round(time.perf_counter() - t, 3)
            res = audit_implementation(numpy_implementation(faulty(name, form), name, form), "cpu", _spec(),
                                              _spec().profile(form), seed=0, shrink_budget=0, quota=quota)
            row["first_violation_case"], row["cases"] = res.first_failure_case, res.cases
            echo(f"  {len(row['exact_at']):2d}/{row['seeds']} exact  {form:5s} {name:22s} {','.join(sorted(want)):28s}"
                 + (f" also {row['extra']}" if row["extra"] else "")
                 + (f" MISSING {row['missing']}" if row["missing"] else ""))
            rows.append(row)
    for form in FORMS:
        for name, fn in CORRECT_FORMS[form].items():
            found: dict = {}
            for seed in correct_seeds:
                rep = audit(None, form, impl=numpy_implementation(fn, f"correct:{form}:{name}", form), quota=quota,
                            seed=seed, fingerprint=False, shrink_budget=0)
                for v in rep.violations + rep.warnings:
                    found.setdefault(v["clause"], []).append(seed)
            rows.append({"fault": None, "form": form, "correct": name, "seeds": len(correct_seeds),
                         "false_findings": found})
            echo(f"  correct kernel {form} {name}: {sum(map(len, found.values()))} findings over "
                 f"{len(correct_seeds)} seeds {found or ''}")
    return rows


def sync_detection(quota=100) -> list[dict]:
    """The same for the simulated cross-replica faults (catalogs/sync_faults.py)."""
    rows = []
    for name, want in SYNC_FAULTS.items():
        impl = implementation(name)
        res = audit_sync(impl, "cpu", _spec(), _spec().profile(impl.profile), seed=0, shrink_budget=0, quota=quota)
        got = sorted({k[0] for k, tl in res.tallies.items() if tl.failed})
        rows.append({"fault": name, "expected": want, "caught": (want in got) if want else not got,
                     "clauses": got, "cases": res.cases, "first_violation_case": res.first_failure_case})
    return rows


def _seeds(text: str) -> list[int]:
    """"0-9" or "0,3,7"."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(t) for t in text.split(",")]


def _spec():
    return get_spec()


def measure_tox(root: Path, args: list[str], interval=0.5) -> dict:
    """Run `tox` (warm environments: run it once before) and sample the resident memory of
    its whole process tree from /proc: wall time, the peak of the tree's summed RSS, and the
    largest single process."""
    peak = {"tree_mb": 0.0, "process_mb": 0.0}

    def tree(pid):
        kids, out = {}, [pid]
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                    kids.setdefault(ppid, []).append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        i = 0
        while i < len(out):
            out.extend(kids.get(out[i], []))
            i += 1
        return out

    def rss_mb(pid):
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0
    t0 = time.perf_counter()
    proc = subprocess.Popen(["tox", *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def sample():
        while not done.is_set():
            sizes = [rss_mb(p) for p in tree(proc.pid)]
            peak["tree_mb"] = max(peak["tree_mb"], sum(sizes))
            peak["process_mb"] = max(peak["process_mb"], max(sizes, default=0.0))
            done.wait(interval)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    done.set()
    th.join()
    return {"command": "tox " + " ".join(args), "exit_status": proc.returncode,
            "wall_s": round(time.perf_counter() - t0, 1), "peak_tree_rss_mb": round(peak["tree_mb"]),
            "peak_process_rss_mb": round(peak["process_mb"]), "tail": out.strip().splitlines()[-12:]}


def one(name: str) -> dict:
    """split_times for one implementation, in this process (the caller runs one process per
    implementation: a Keras backend is fixed per process, and frameworks stay apart)."""
    impl = find(name)
    impl.versions()
    return split_times(impl, _spec())


def main(args) -> int:
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    root = project_root() or Path.cwd()
    out: dict = {"machine": {"python": sys.version.split()[0], "cores": __import__("os").cpu_count()},
                 "implementations": [], "audit": {}, "faults": [], "sync_faults": []}
    if args.tox:
        print("running `tox` (warm environments) with its process tree's memory sampled ...", flush=True)
        out["tox"] = measure_tox(root, [])
        t = out["tox"]
        print(f"tox: exit {t['exit_status']}, {t['wall_s']:.0f} s wall, peak RSS {t['peak_tree_rss_mb']} MB "
              f"(process tree), {t['peak_process_rss_mb']} MB (largest process)\n")
    print(f"{'implementation':46s} {'call ms':>8s} {'fw ms':>7s} {'oracle ms':>9s} {'harness ms':>10s} "
          f"{'cases':>6s} {'cases/s':>8s} {'overhead':>8s} {'min/clause':>10s}")
    impls = [] if args.no_impls else [i for i in all_implementations()
                                      if i.family not in ("snippets", "extra", "distributed")]
    for impl in impls:
        res = subprocess.run([sys.executable, "-m", "bnconf.frontends.cli", "bench", "--one", impl.name], capture_output=True,
                             text=True, env=worker_env())
        try:
            row = json.loads(res.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            why = (res.stderr.strip().splitlines() or ["no output"])[-1][:90]
            print(f"{impl.name:46s} not measured here: {why}")
            continue
        out["implementations"].append(row)
        print(f"{impl.name:46s} {row['typical_call_ms']:8.2f} {row['framework_s_per_case'] * 1e3:7.2f} "
              f"{row['oracle_s_per_case'] * 1e3:9.2f} {row['harness_s_per_case'] * 1e3:10.2f} {row['cases']:6d} "
              f"{row['cases_per_s']:8.1f} {row['overhead_ratio']:8.2f} {row['min_cases_per_clause'] or 0:10d}")
    example = root / "examples" / "my_bn.py"
    if example.exists():
        # GNU time reports the audit's own peak: ru_maxrss of a child forked from this (large) process
        # would carry this process's high-water mark across exec.
        cmd = [sys.executable, "-m", "bnconf.frontends.cli", "audit", f"{example}:batch_norm", "--profile", "torch"]
        gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
        t = time.perf_counter()
        res = subprocess.run(([gnu_time, "-f", "PEAK_KB %M"] if gnu_time else []) + cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        peak = next((int(l.split()[1]) for l in res.stderr.splitlines() if l.startswith("PEAK_KB")), -1024) / 1024
        out["audit"]["correct_wall_s"] = round(wall, 2)
        out["audit"]["correct_peak_rss_mb"] = round(peak, 1)
        print(f"\nbnconf audit examples/my_bn.py:batch_norm --profile torch: {wall:.2f} s wall, peak RSS {peak:.0f} MB")
    res = audit_implementation(numpy_implementation(faulty("eps_outside_sqrt"), "f", "torch"), "cpu", _spec(),
                                      _spec().profile("torch"), shrink_budget=0)
    out["audit"]["faulty_first_violation_s"] = round(res.first_failure_s or -1, 3)
    out["audit"]["faulty_first_violation_case"] = res.first_failure_case
    print(f"first violation on a faulty function (eps outside sqrt): {res.first_failure_s:.3f} s, "
          f"case {res.first_failure_case}")
    print(f"\nseeded faults at seeds {args.fault_seeds}, correct kernels at seeds {args.correct_seeds} "
          "(100 cases per clause each): reported under exactly the catalog's clauses?")
    rows = detection(fault_seeds=_seeds(args.fault_seeds), correct_seeds=_seeds(args.correct_seeds))
    out["faults"] = rows
    srows = sync_detection()
    out["sync_faults"] = srows
    print(f"\ncross-replica faults (catalogs/sync_faults.py): {sum(r['caught'] for r in srows)}/{len(srows)} as expected")
    for r in srows:
        print(f"  {'ok' if r['caught'] else 'WRONG':6s} {r['fault']:22s} expected {r['expected'] or 'no finding':20s} "
              f"got {','.join(r['clauses']) or '-':40s} first at case {r['first_violation_case'] or '-'}"
              f" of {r['cases']}")
    report = root / "reports" / "report.json"
    if report.exists():
        rep = json.loads(report.read_text())
        tot = sum(i["seconds"] for i in rep["implementations"])
        out["tox_audit_seconds_from_report"] = round(tot, 1)
        print(f"\nimplementation time in the last report (reports/report.json): {tot:.0f} s over "
              f"{len(rep['implementations'])} implementations")
    atomic_write_text(args.json_out, json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.json_out}")
    return 0

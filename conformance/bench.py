"""`bnconf bench`: where the time goes, and what the default audit catches.

Per importable implementation: the framework's own time per case, the oracle-side time
(oracle, tolerance model, comparisons), the harness time (generation, materializing,
trace bookkeeping, recording), cases per second and the overhead ratio
harness / (framework + oracle). Then `bnconf audit` on a correct function (wall time, peak
memory), time to the first violation on a faulty one, and detection power over the seeded
fault catalog (bnconf.fault_catalog), with 0 false findings required on correct kernels.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from . import checks as checks_mod
from . import engine


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
    from .adapters._protocol import Implementation

    class Timed:
        def __init__(self, inst):
            self.inst = inst
            self.forward = timer.wrap(inst.forward)
            self.running_stats = timer.wrap(inst.running_stats)
            self.counter = timer.wrap(inst.counter)
    build = timer.wrap(impl.build)
    return Implementation(impl.name, impl.profile, impl.capabilities, lambda p, d: Timed(build(p, d)),
                          impl.versions, impl.devices, impl.family)


def split_times(impl, spec, n_cases=40, seed=0) -> dict:
    fw, orc = _Timer(), _Timer()
    original = checks_mod.run_checks

    depth = [0]

    def checks_only(ctx):  # the differential re-runs inside the checks are framework time, not oracle time
        if depth[0]:  # a re-run's own checks: already inside the outer measurement
            return original(ctx)
        depth[0] += 1
        before_fw, t = fw.s, time.perf_counter()
        try:
            return original(ctx)
        finally:
            depth[0] -= 1
            orc.s += time.perf_counter() - t - (fw.s - before_fw)
    engine.checks_mod.run_checks = checks_only
    try:
        res = engine.audit_implementation(_timed_impl(impl, fw), "cpu", spec, spec.profile(impl.profile),
                                          max_examples=n_cases, seed=seed, shrink_budget=0)
    finally:
        engine.checks_mod.run_checks = original
    harness = max(res.seconds - fw.s - orc.s, 0.0)
    per = res.cases or 1
    return {"implementation": impl.name, "cases": res.cases, "total_s": round(res.seconds, 3),
            "framework_s_per_case": round(fw.s / per, 5), "oracle_s_per_case": round(orc.s / per, 5),
            "harness_s_per_case": round(harness / per, 5), "cases_per_s": round(per / res.seconds, 2),
            "overhead_ratio": round(harness / max(fw.s + orc.s, 1e-9), 3)}


def detection(max_examples=60) -> list[dict]:
    from .audit_user import audit, numpy_implementation
    from .fault_catalog import CORRECT, FAULTS, faulty
    rows = []
    for name, (desc, want) in FAULTS.items():
        impl = numpy_implementation(faulty(name), f"fault_catalog:{name}", "torch")
        t = time.perf_counter()
        rep = audit(None, "torch", impl=impl, max_examples=max_examples, fingerprint=False, shrink_budget=0)
        got = {v["clause"] for v in rep.violations}
        res_first = rep.__dict__.get("first_failure")
        rows.append({"fault": name, "what": desc, "expected_any_of": sorted(want), "caught": bool(got & want),
                     "caught_by": sorted(got & want), "other_clauses": sorted(got - want),
                     "seconds": round(time.perf_counter() - t, 3), "first_failure": res_first})
    for name, fn in CORRECT.items():
        impl = numpy_implementation(fn, f"correct:{name}", "torch")
        rep = audit(None, "torch", impl=impl, max_examples=max_examples, fingerprint=False, shrink_budget=0)
        rows.append({"fault": None, "correct": name, "false_findings": [v["clause"] for v in rep.violations],
                     "cases": rep.cases})
    return rows


def main(args) -> int:
    from .registry import all_implementations
    from .spec_loader import get_spec
    spec = get_spec()
    out: dict = {"machine": {"python": sys.version.split()[0]}, "implementations": [], "audit": {}, "faults": []}
    n = 20 if args.quick else 60
    print(f"{'implementation':46s} {'fw ms/case':>10s} {'oracle ms':>10s} {'harness ms':>10s} {'cases/s':>8s} "
          f"{'overhead':>8s}")
    for impl in all_implementations():
        if impl.family in ("snippets", "extra"):
            continue
        try:
            impl.versions()
        except Exception as exc:
            print(f"{impl.name:46s} not importable here: {type(exc).__name__}")
            continue
        row = split_times(impl, spec, n_cases=n)
        out["implementations"].append(row)
        print(f"{impl.name:46s} {row['framework_s_per_case'] * 1e3:10.2f} {row['oracle_s_per_case'] * 1e3:10.2f} "
              f"{row['harness_s_per_case'] * 1e3:10.2f} {row['cases_per_s']:8.1f} {row['overhead_ratio']:8.2f}")
    # bnconf audit on a correct function: a fresh process, wall time and peak memory
    root = Path(__file__).resolve().parent.parent
    example = root / "examples" / "my_bn.py"
    if example.exists():
        # GNU time reports the audit's own peak: ru_maxrss of a child forked from this (large) process
        # would carry this process's high-water mark across exec.
        import shutil
        cmd = [sys.executable, "-m", "bnconf.cli", "audit", f"{example}:batch_norm", "--profile", "torch"]
        gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
        t = time.perf_counter()
        res = subprocess.run(([gnu_time, "-f", "PEAK_KB %M"] if gnu_time else []) + cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        peak = next((int(l.split()[1]) for l in res.stderr.splitlines() if l.startswith("PEAK_KB")), -1024) / 1024
        out["audit"]["correct_wall_s"] = round(wall, 2)
        out["audit"]["correct_peak_rss_mb"] = round(peak, 1)
        print(f"\nbnconf audit examples/my_bn.py:batch_norm --profile torch: {wall:.2f} s wall, peak RSS {peak:.0f} MB")
    from .audit_user import numpy_implementation
    from .fault_catalog import faulty
    res = engine.audit_implementation(numpy_implementation(faulty("eps_outside_sqrt"), "f", "torch"), "cpu", spec,
                                      spec.profile("torch"), max_examples=60, shrink_budget=0)
    out["audit"]["faulty_first_violation_s"] = round(res.first_failure_s or -1, 3)
    out["audit"]["faulty_first_violation_case"] = res.first_failure_case
    print(f"first violation on a faulty function (eps outside sqrt): {res.first_failure_s:.3f} s, "
          f"case {res.first_failure_case}")
    rows = detection(max_examples=60)
    out["faults"] = rows
    caught = [r for r in rows if r.get("fault")]
    print(f"\nseeded faults caught by the default audit: {sum(r['caught'] for r in caught)}/{len(caught)}")
    for r in caught:
        print(f"  {'caught' if r['caught'] else 'MISSED':7s} {r['fault']:22s} by {','.join(r['caught_by']) or '-':32s}"
              f" {r['seconds']:.2f} s")
    for r in rows:
        if r.get("correct"):
            print(f"  correct kernel {r['correct']}: {len(r['false_findings'])} false findings "
                  f"{r['false_findings'] or ''} over {r['cases']} cases")
    report = root / "reports" / "report.json"
    if report.exists():
        rep = json.loads(report.read_text())
        tot = sum(i["seconds"] for i in rep["implementations"])
        out["tox_audit_seconds_from_report"] = round(tot, 1)
        print(f"\nimplementation time in the last report (reports/report.json): {tot:.0f} s over "
              f"{len(rep['implementations'])} implementations")
    from .records import atomic_write_text
    atomic_write_text(args.json_out, json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.json_out}")
    return 0

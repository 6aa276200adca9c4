"""One implementation, one process: audit it on its devices and append its records.

Run by the runner as `python -m bnconf.running.worker`, so that a crash, a hang or an import
error in a framework takes down this process only and becomes an `error` record there.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import hypothesis

from bnconf.cases.case import Case
from bnconf.cases.strategies import fits
from bnconf.cases.sync_case import SyncCase
from bnconf.report import reproducers as repro
from bnconf.results import known as known_mod
from bnconf.results import records as rec_mod
from bnconf.results.fingerprint import fingerprint
from bnconf.results.provenance import platform, stamp
from bnconf.running import sync_audit as sync_engine
from bnconf.running.audit import DEFAULT_QUOTA, audit_implementation, evaluate, run_case
from bnconf.running.registry import find
from bnconf.spec.loader import get_spec


def gpu_kinds(devices: list[str]) -> list[str]:
    return [d for d in devices if d != "cpu"]


def _stamp(out, result, **extra):
    q = result.quota or {}
    for r in out:
        r.update(elapsed_s=round(result.seconds, 3), total_cases=result.cases, case_sequence=result.sequence, **extra)
        if q:
            r["quota"] = q["quota"]
            if r.get("clause") in q.get("given_up", ()):
                r["quota_note"] = (f"{r.get('cases', 0)} cases: the scheduler aimed {q['quota']} cases at it "
                                   f"and stopped after {q['stall_after']} in a row missed it")
    return out


def sync_audit_records(impl, spec, *, device, max_examples, seed, repro_dir, known_dir=None,
                       shrink_budget=20, progress=None, quota=DEFAULT_QUOTA) -> list[dict]:
    """Records of a data-parallel wrapper: the cross-replica clauses (scope data_parallel),
    plus any single-device clause a finding was attributed to (e.g. BN-VAR-STABLE)."""
    profile = spec.profile(impl.profile)
    versions = impl.versions()
    clauses = spec.clauses_for(profile, scope="data_parallel")
    try:
        result = sync_engine.audit_sync(impl, device, spec, profile, max_examples=max_examples, seed=seed,
                                        shrink_budget=shrink_budget, progress=progress, quota=quota)
    except sync_engine.SyncUnsupported as exc:
        ids = [c.id for c in clauses] + [c for c in sync_engine.ATTRIBUTED if c not in {c.id for c in clauses}]
        return [rec_mod.status_record(impl.name, impl.family, impl.profile, versions, device, "*", cid,
                                      "unsupported", f"the engine refuses it: {exc}") for cid in ids]
    # the single-device clauses a cross-replica finding can be attributed to always get a record:
    # the pytest items plan them before any case runs
    ids = [c.id for c in clauses] + sorted(({k[0] for k in result.tallies} | set(sync_engine.ATTRIBUTED))
                                           - {c.id for c in clauses})
    out = []
    for cid in ids:
        unsupported = rec_mod.unsupported_record(impl, versions, device, spec.clauses[cid])
        if unsupported:
            out.append(unsupported)
            continue
        out += rec_mod.clause_records(impl, device, versions, seed, result, spec.clauses[cid], impl.capabilities.dtypes,
                                      lambda case, outcome, clause=spec.clauses[cid]: repro.write_sync(
                                          Path(repro_dir), impl, device, clause, case, outcome))
    _stamp(out, result, scope="data_parallel")
    return _apply_known(out, impl, spec, device, known_dir,
                        lambda cj: sync_engine.evaluate(impl, SyncCase.from_json(cj), device, spec, profile)[0])


def audit_records(impl, spec, *, device, max_examples, seed, repro_dir, known_dir=None, shrink_budget=30,
                  progress=None, quota=DEFAULT_QUOTA) -> list[dict]:
    if getattr(impl, "sync", False):
        return sync_audit_records(impl, spec, device=device, max_examples=max_examples, seed=seed,
                                  repro_dir=repro_dir, known_dir=known_dir, progress=progress, quota=quota)
    profile = spec.profile(impl.profile)
    versions = impl.versions()
    result = audit_implementation(impl, device, spec, profile, max_examples=max_examples, seed=seed,
                                  shrink_budget=shrink_budget, progress=progress, quota=quota)
    out = []
    dtypes = list(impl.capabilities.dtypes)
    for clause in spec.clauses_for(profile):
        if clause.planned:
            out.append(rec_mod.status_record(impl.name, impl.family, impl.profile, versions, device, "*",
                                             clause.id, "not_run", f"planned: {clause.planned}"))
            continue
        unsupported = rec_mod.unsupported_record(impl, versions, device, clause)
        if unsupported:
            out.append(unsupported)
            continue
        out += rec_mod.clause_records(impl, device, versions, seed, result, clause, dtypes,
                                      lambda case, outcome, clause=clause: repro.write(
                                          Path(repro_dir), impl, device, clause, case, outcome, run_case))
    _stamp(out, result)
    applicable = {c.id for c in spec.clauses_for(profile) if not c.planned}

    def replay(cj):
        case = Case.from_json(cj)
        if not fits(case, impl.capabilities):
            raise ValueError("the pinned case is outside the implementation's capabilities")
        return evaluate(impl, case, device, spec, profile, applicable)[0]
    return _apply_known(out, impl, spec, device, known_dir, replay)


def _apply_known(out, impl, spec, device, known_dir, evaluate) -> list[dict]:
    """The listed deviations, each entry's pinned case re-run here (see known.py)."""
    entries = known_mod.load_known(impl.name, spec, known_dir)
    replayed = known_mod.replay(entries, device, platform(), evaluate)
    return known_mod.apply_known(out, entries, impl.name, device, replayed)


def _provenance(record: dict) -> dict:
    """The code, the case generator and the machine a record was measured with."""
    stamp(record)
    record["bnconf"]["hypothesis"] = hypothesis.__version__
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bnconf.running.worker")
    ap.add_argument("--impl", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases-per-clause", type=int, default=DEFAULT_QUOTA,
                    help="at least this many generated cases per clause (the scheduler aims cases at rare clauses)")
    ap.add_argument("--max-examples", type=int, default=None, help="cap on all cases (default 20 x cases-per-clause)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repro-dir", default="reports/repro")
    ap.add_argument("--spec", default=None)
    ap.add_argument("--devices", default="all", help="comma list, or 'all' for every visible device")
    args = ap.parse_args(argv)
    spec = get_spec(args.spec)
    impl = find(args.impl)
    t0 = time.perf_counter()
    try:
        visible = impl.devices()
        versions = impl.versions()
    except Exception as exc:  # ImportError, or the adapter's Unsupported (e.g. an API that is gone)
        kind = type(exc).__name__
        if kind not in ("Unsupported", "ImportError", "ModuleNotFoundError"):
            raise
        why = f"framework not importable here: {exc}" if "Import" in kind or "Module" in kind else str(exc)
        rec = rec_mod.status_record(impl.name, impl.family, impl.profile, {}, "cpu", "*", "*", "unsupported", why)
        rec_mod.append_jsonl(args.out, [_provenance(rec)])
        return 0
    wanted = visible if args.devices == "all" else args.devices.split(",")
    records = []
    for device in wanted:
        if device not in visible:
            records.append(rec_mod.status_record(impl.name, impl.family, impl.profile, versions, device, "*", "*",
                                                 "not_run", f"device {device!r} not visible (visible: {visible})"))
            continue
        records.extend(audit_records(impl, spec, device=device, max_examples=args.max_examples, seed=args.seed,
                                     repro_dir=args.repro_dir, quota=args.cases_per_clause))
    if "cpu" in wanted and not getattr(impl, "sync", False):
        try:
            fp = fingerprint(impl)
        except Exception as exc:  # a probe the implementation cannot run is data, not a crash
            fp = {"error": f"{type(exc).__name__}: {exc}"}
        records.append({"kind": "fingerprint", "implementation": impl.name, "family": impl.family,
                        "profile": impl.profile, "versions": versions, "device": "cpu", "dtype": "*",
                        "clause": "*", "status": "info", "fingerprint": fp})
    if args.devices == "all" and not gpu_kinds(visible):
        why = getattr(impl, "gpu_note", None) or "no GPU visible to the framework on this machine"
        records.append(rec_mod.status_record(impl.name, impl.family, impl.profile, versions, "gpu", "*", "*", "not_run",
                                             why))
    for r in records:
        r["wall_s"] = round(time.perf_counter() - t0, 3)
        _provenance(r)
    rec_mod.append_jsonl(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())

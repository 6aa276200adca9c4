"""The discrepancy report: reports/report.json (primary, schema in reports/schema.json),
report.md and a self-contained report.html (inline CSS and SVG; no network, no script).

Only records of one bnconf commit are counted (other_runs.split); the rest get their own section.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from bnconf.adapters.snippets.registry import DOCUMENTS
from bnconf.report import findings
from bnconf.report import other_runs as report_runs
from bnconf.report import paths as report_paths
from bnconf.report.html import render_html
from bnconf.report.markdown import render_md
from bnconf.reference.porting import porting_guide
from bnconf.report.statuses import FP_KEYS, REPRO_NOTE, SPEC_LINK, worst
from bnconf.results.provenance import platform_label
from bnconf.results.records import atomic_write_text, blocks_by_root, read_jsonl
from bnconf.spec.loader import get_spec
from bnconf.spec.render import anchor


def declared_conventions(spec, profile_name):
    p = spec.profiles.get(profile_name)
    if p is None:
        return {}
    d = {k: p.conventions.get(k) for k in FP_KEYS if k in p.conventions}
    d["default_momentum"], d["default_eps"] = p.default_momentum, p.default_eps
    d["variance_algorithm"] = "stable"
    return d


def _implementations(results) -> dict:
    """Per implementation, each (device, platform) with its own versions: a GPU machine's torch
    build is not the CPU machine's."""
    impls: dict = {}
    for r in results:
        i = impls.setdefault(r["implementation"], {"implementation": r["implementation"], "family": r.get("family"),
                                                   "profile": r.get("profile"), "devices": set(), "runs": {},
                                                   "seconds": 0.0, "cases": 0, "notes": []})
        i["devices"].add(r.get("device"))
        seconds, cases = float(r.get("wall_s") or r.get("elapsed_s") or 0.0), int(r.get("total_cases") or 0)
        i["seconds"], i["cases"] = max(i["seconds"], seconds), max(i["cases"], cases)
        if r.get("clause") == "*":
            i["notes"].append({"device": r.get("device"), "status": r["status"], "note": r.get("note", "")})
        if r.get("clause") == "*" and r["status"] == "not_run":
            continue   # "gpu: not run here" is a note, not a device the implementation ran on
        run = i["runs"].setdefault((r.get("device"), r["_platform"]), {
            "device": r.get("device"), "platform": r["_platform"], "versions": {}, "seconds": 0.0, "cases": 0})
        run["versions"].update(r.get("versions") or {})
        run["seconds"], run["cases"] = max(run["seconds"], seconds), max(run["cases"], cases)
    for i in impls.values():
        i["devices"] = sorted(d for d in i["devices"] if d)
        i["by_device"] = [dict(v, versions=dict(sorted(v["versions"].items())))
                          for _, v in sorted(i.pop("runs").items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))]
    return impls


def _matrix(results, spec) -> list[dict]:
    """One row per implementation x device x platform: two machines' records are never one cell."""
    keys = sorted({(r["implementation"], r.get("device"), r["_platform"]) for r in results if r.get("device")},
                  key=lambda k: (k[0], str(k[1]), k[2]))
    order = {name: n for n, name in enumerate(dict.fromkeys(r["implementation"] for r in results))}
    measured = {k for k in keys if any((r["implementation"], r.get("device"), r["_platform"]) == k
                                       and r["clause"] != "*" for r in results)}
    rows = []
    for key in sorted(keys, key=lambda k: order[k[0]]):
        if key not in measured and key[1] != "cpu":
            continue   # a device with no result of its own (e.g. "gpu: not run, no GPU visible") is a note
        recs = [r for r in results if (r["implementation"], r.get("device"), r["_platform"]) == key]
        whole = [r for r in recs if r["clause"] == "*"]
        row = {"implementation": key[0], "device": key[1], "platform": key[2], "cells": {}}
        for c in spec.clauses:
            cell = [r for r in recs if r["clause"] == c] or whole
            if cell:
                row["cells"][c] = {"status": worst([r["status"] for r in cell]),
                                   "cases": sum(int(r.get("cases") or 0) for r in cell),
                                   "dtypes": {r.get("dtype"): r["status"] for r in cell}}
        if row["cells"]:
            rows.append(row)
    return rows


def _finding(r, spec) -> dict:
    return dict(findings.from_record(r, spec), platform=r["_platform"])


def _run(r) -> tuple:
    return r["implementation"], r.get("device"), r.get("dtype")


def _mark_blocks(results) -> None:
    """Each root finding lists the clauses it blocks (same implementation, device and dtype)."""
    blocks = blocks_by_root([r for r in results if r["status"] == "blocked"], _run)
    for f in results:
        if (*_run(f), f["clause"]) in blocks:
            f["_blocks"] = list(blocks[(*_run(f), f["clause"])])


def build(records: list[dict], spec, commit=None, archived=(), out_dir=None) -> dict:
    """records: this machine's raw records; archived: records kept from elsewhere (reports/gpu/),
    counted only when they carry the chosen commit; out_dir: where the report is written (paths
    in it are relative to it)."""
    roots = report_paths.checkout_roots()
    raw = [report_paths.clean_record(r, out_dir, roots) for r in records]
    kept = [report_paths.clean_record(r, out_dir, roots) for r in archived]
    current, others, suite = report_runs.split(raw, kept, commit)
    # workers side by side append in the order they finish: the report does not follow it
    current.sort(key=lambda r: tuple(str(r.get(k)) for k in ("kind", "implementation", "device", "dtype", "clause",
                                                            "fact", "status")))
    for r in current:
        r["_platform"] = platform_label(r.get("platform"))
    facts = [r for r in current if r.get("kind") == "fact"]
    results = [r for r in current if r.get("kind") not in ("fingerprint", "fact")]
    # A "gpu: not run here" placeholder from a CPU machine gives way to GPU records of the
    # same commit measured elsewhere (reports/gpu/) for the same implementation.
    on_gpu = {r["implementation"] for r in results if r.get("device") not in ("cpu", None)
              and not (r["clause"] == "*" and r["status"] == "not_run")}
    results = [r for r in results if not (r.get("device") == "gpu" and r["status"] == "not_run"
                                          and r["clause"] == "*" and r["implementation"] in on_gpu)]
    fps = {r["implementation"]: r for r in current if r.get("kind") == "fingerprint"}
    impls = _implementations(results)
    _mark_blocks(results)
    findings = [_finding(r, spec) for r in results
                if r["status"] in ("fail", "warn", "known", "unexpected_pass", "error")
                and not (r["clause"] == "*" and r["status"] != "error")]
    conventions = []
    data_parallel = {r["implementation"] for r in results if r.get("scope") == "data_parallel"}
    for name, i in impls.items():
        if name in data_parallel:
            continue   # a wrapper of a layer fingerprinted on its own; its conventions are the layer's
        fp = fps.get(name, {}).get("fingerprint")
        conventions.append({"implementation": name, "profile": i["profile"],
                            "declared": declared_conventions(spec, i["profile"]), "measured": fp})
    samples = {}
    for r in results:
        if r["clause"] in ("BN-NORMALIZE", "BN-VAR-STABLE") and r.get("samples"):
            samples.setdefault(r["implementation"], {}).setdefault(r.get("dtype"), []).extend(r["samples"])
    counts: dict = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {
        "schema": "bnconf-report/1",
        "spec_version": spec.version,
        "generated": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "suite": suite,
        "environment": {"platforms": report_runs.platforms(current),
                        "gpu": sorted({n["note"] for i in impls.values() for n in i["notes"] if n["device"] != "cpu"})
                        or "GPU results present"},
        "summary": counts,
        "implementations": list(impls.values()),
        "clauses": [{"id": c.id, "title": c.title, "level": c.level, "link": SPEC_LINK.format(anchor(c.id)),
                     "planned": c.planned} for c in spec.clauses.values()],
        "matrix": _matrix(results, spec),
        "conventions": conventions,
        "findings": findings,
        "reproducers": REPRO_NOTE,
        "accuracy_samples": samples,
        "porting": porting_guide(spec),
        "documents": documents(results, facts, spec),
        "other_runs": report_runs.other_runs(others),
    }


def documents(results, facts, spec) -> list[dict]:
    """Per source document: what each of its specimens gets wrong and right, and its facts."""
    out = []
    for doc, title in DOCUMENTS.items():
        specimens = {}
        for r in results:
            name = r["implementation"]
            if not name.startswith(f"snippet.{doc}.") or r.get("device") not in ("cpu", None):
                continue
            s = specimens.setdefault(name, {"implementation": name, "profile": r.get("profile"), "clauses": {}})
            if r["clause"] != "*":
                prev = s["clauses"].get(r["clause"])
                s["clauses"][r["clause"]] = r["status"] if prev is None else worst([prev, r["status"]])
            if r["status"] in ("fail", "known", "error") and r["clause"] != "*":
                s.setdefault("findings", {}).setdefault(r["clause"], r.get("note") or "")
        for s in specimens.values():
            s["violates"] = sorted(c for c, st in s["clauses"].items() if st in ("fail", "known", "error"))
            s["conforms"] = sorted(c for c, st in s["clauses"].items() if st == "pass")
        out.append({"document": doc, "title": title, "specimens": list(specimens.values()),
                    "facts": [f for f in facts if f.get("document") == doc]})
    return out


def _read(paths, out_dir: Path) -> list[dict]:
    out = []
    for p in paths:
        source = report_paths.source_name(p, out_dir)
        out += [dict(r, _source=source) for r in read_jsonl([p])]
    return out


def build_report(raw_paths, out_dir: Path, commit=None, archived_paths=()) -> list[Path]:
    """raw_paths: this machine's records; archived_paths: records kept from other machines
    (reports/gpu/), counted only when they carry the same commit (see report_runs)."""
    spec = get_spec()
    out_dir = Path(out_dir)
    rep = build(_read(raw_paths, out_dir), spec, commit, _read(archived_paths, out_dir), out_dir)
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "report.html"]
    atomic_write_text(paths[0], json.dumps(rep, indent=1, sort_keys=True, default=str) + "\n")
    atomic_write_text(paths[1], render_md(rep))
    atomic_write_text(paths[2], render_html(rep))
    return paths

"""The report from a real audit: valid against its schema, readable in Markdown, and a
self-contained HTML page that a real browser loads without errors; records of other code or
other machines kept apart, and no machine path anywhere in it."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
GPU_HALF = sorted(str(p) for p in (ROOT / "reports/gpu").glob("*.jsonl"))
MACHINE = ("/root/", "/tmp/", "/work/", ".tox/")


def stamp(record, commit):
    """The stamp a run at `commit` gives a record (its platform: this machine's)."""
    from bnconf.results import provenance
    provenance.stamp(record)
    record["bnconf"] = dict(record["bnconf"], commit=commit)
    return record


def stamp_file(path, commit):
    """Stamp the records a test wrote itself (facts, a synthetic crash) as their run would."""
    from bnconf.results.records import read_jsonl
    recs = [r if r.get("bnconf") else stamp(r, commit) for r in read_jsonl([path])]
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs), encoding="utf-8")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    raw = d / "raw.jsonl"
    env = dict(os.environ, BNCONF_COMMIT="test")
    for impl in ("snippet.002.numpy", "snippet.000.keras-old.BatchNormalization"):
        subprocess.run([sys.executable, "-m", "bnconf.running.worker", "--impl", impl, "--out", str(raw), "--max-examples",
                        "25", "--repro-dir", str(d / "out" / "repro")], check=True, cwd=ROOT, timeout=300, env=env)
    from bnconf.tools.facts import run_facts
    from bnconf.results.records import append_jsonl
    append_jsonl(raw, run_facts(["torch"]))
    append_jsonl(raw, [{"implementation": "fault.segfault", "family": "extra", "profile": "torch", "device": "cpu",
                        "dtype": "*", "clause": "*", "status": "error", "note": "worker killed by signal SIGSEGV"}])
    stamp_file(raw, "test")
    from bnconf.report.assemble import build_report
    paths = build_report([raw], d / "out", commit="test", archived_paths=GPU_HALF)
    return d, paths


def test_report_json_validates_and_keeps_not_run_apart_from_fail(built):
    _, paths = built
    rep = json.loads(paths[0].read_text())
    jsonschema.validate(rep, json.loads((ROOT / "reports/schema.json").read_text()))
    rows = {(r["implementation"], r["device"]): r for r in rep["matrix"]}
    numpy_row = rows["snippet.002.numpy", "cpu"]["cells"]
    assert ("snippet.002.numpy", "gpu") not in rows                   # the GPU half: a note, not a row of "not run"
    impl = next(i for i in rep["implementations"] if i["implementation"] == "snippet.002.numpy")
    assert any(n["device"] == "gpu" and n["status"] == "not_run" for n in impl["notes"])
    # the snippet reduces over the feature axis: a finding, listed in adapters/known (so "known")
    assert numpy_row["BN-AXES"]["status"] in ("fail", "known")
    assert numpy_row["BN-MOMENTUM-OLD-WEIGHT"]["status"] == "unsupported"
    assert rows["fault.segfault", "cpu"]["cells"]["BN-AXES"]["status"] == "error"
    f = next(f for f in rep["findings"] if f["implementation"] == "snippet.002.numpy" and f["clause"] == "BN-AXES")
    assert f["status"] != "known" or "feature axis" in f["known"]["reason"].lower().replace("feature\naxis", "feature axis")
    assert f["link"] == "../spec/SPEC.md#bn-axes" and f["case"]
    assert f["reproducer"].startswith("repro/snippet.002.numpy/") and f["reproducer_present"] is True
    assert f["reproduce"] == f"python {f['reproducer']}/repro.py"
    assert (paths[0].parent / f["reproducer"] / "repro.py").is_file()   # cited relative to the report, and there
    if f["status"] == "known":
        assert re.fullmatch(r"adapters/known/snippet\.002\.numpy\.yaml:\d+", f["known"]["where"])
    conv = {c["implementation"]: c for c in rep["conventions"]}
    assert conv["snippet.000.keras-old.BatchNormalization"]["measured"]["momentum_form"] == "old_weight"
    assert any(p["from"] == "torch" and p["to"] == "keras" and "1 - momentum_torch" in p["momentum"]
               for p in rep["porting"])


def test_source_documents_section_lists_specimens_and_facts(built):
    rep = json.loads(built[1][0].read_text())
    docs = {d["document"]: d for d in rep["documents"]}
    assert "BN-AXES" in docs["002"]["specimens"][0]["violates"]
    keras_old = docs["000"]["specimens"][0]
    assert keras_old["implementation"] == "snippet.000.keras-old.BatchNormalization"
    assert "BN-EPS-INSIDE" in keras_old["violates"]
    facts = {f["fact"]: f for f in docs["000"]["facts"]}
    assert facts["000-5"]["status"] == "holds" and facts["000-1"]["status"] == "holds"


def test_markdown_has_every_section(built):
    md = built[1][1].read_text()
    for h in ("## Matrix", "## Conventions", "## Findings", "## Source documents", "## Accuracy plots",
              "## Porting guide"):
        assert h in md
    assert "(../spec/SPEC.md#bn-axes)" in md and "data:image/svg+xml" in md


def test_html_is_self_contained(built):
    html = built[1][2].read_text()
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert "<svg" in html and "bnconf discrepancy report" in html


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def assert_no_machine_path(paths):
    rep = json.loads(paths[0].read_text())
    bad = [s for s in _strings(rep) if s.startswith("/") or any(m in s for m in MACHINE)]
    assert bad == []
    for p in paths[1:]:
        text = p.read_text()
        assert [m for m in MACHINE if m in text] == [], p.name


def test_no_machine_path_in_json_md_or_html(built):
    assert_no_machine_path(built[1])


def test_the_committed_gpu_half_is_listed_apart_and_never_counted(built):
    from bnconf.results.records import read_jsonl
    d, paths = built
    rep = json.loads(paths[0].read_text())
    ours = [r for r in read_jsonl([d / "raw.jsonl"]) if r.get("kind") not in ("fact", "fingerprint")]
    counts = {}
    for r in ours:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    assert rep["summary"] == counts
    gpu = [r for r in read_jsonl(GPU_HALF) if r.get("kind") not in ("fact", "fingerprint")]
    assert sum(g["records"] for g in rep["other_runs"]) == len(gpu)
    assert {f["device"] for f in rep["findings"]} == {"cpu"}
    assert {row["device"] for row in rep["matrix"]} == {"cpu"}
    md = paths[1].read_text()
    assert ("## Other runs (not counted in this report)" in md) == bool(gpu)


def rec(impl, device, clause, status, commit="b" * 40, **kw):
    r = {"implementation": impl, "family": "torch", "profile": "torch", "versions": {"torch": "2.13.0+cpu"},
         "device": device, "dtype": "float32", "clause": clause, "status": status, "cases": 3,
         "passed": 3 if status == "pass" else 0, "failed": 0 if status == "pass" else 3, "note": ""}
    if commit:
        stamp(r, commit)
    r.update(kw)
    return r


H100 = {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "flags": ["amx_bf16", "avx512_fp16", "avx512f"],
        "gpus": ["NVIDIA H100 80GB HBM3"], "machine": "x86_64", "os": "Linux"}
SCHEMA = json.loads((ROOT / "reports/schema.json").read_text())


def test_an_unstamped_gpu_record_does_not_change_the_summary(spec):
    from bnconf.report.assemble import build
    raw = [rec("torch.nn.BatchNorm2d", "cpu", "BN-INIT", "pass")]
    gpu = rec("torch.nn.BatchNorm2d", "cuda", "BN-INIT", "fail", commit=None, versions={"torch": "2.11.0+cu130"})
    stray = rec("torch.nn.BatchNorm2d", "cpu", "BN-AXES", "fail", commit=None)
    alone, merged = build(raw, spec), build(raw + [stray], spec, archived=[gpu])
    jsonschema.validate(merged, SCHEMA)
    assert merged["summary"] == alone["summary"] == {"pass": 1}
    assert merged["matrix"] == alone["matrix"] and merged["findings"] == []
    by_device = {g["device"]: g for g in merged["other_runs"]}
    assert by_device["cuda"]["label"] == "unstamped" and by_device["cuda"]["summary"] == {"fail": 1}
    assert by_device["cuda"]["versions"] == {"torch": "2.11.0+cu130"}
    assert [f["clause"] for f in by_device["cuda"]["findings"]] == ["BN-INIT"]
    assert by_device["cpu"]["summary"] == {"fail": 1}


def test_a_record_of_an_older_commit_appears_only_under_other_runs(spec):
    from bnconf.report.assemble import build
    from bnconf.report.html import render_html
    from bnconf.report.markdown import render_md
    stax = "jax.example_libraries.stax.BatchNorm"
    new = [rec("torch.nn.BatchNorm2d", "cpu", c, "pass") for c in ("BN-INIT", "BN-AXES")]
    old = rec(stax, "cpu", "BN-INIT", "fail", commit="a" * 40, note="not initialised to 1 and 0")
    for rep in (build(new + [old], spec, commit="bbbbbbb"), build(new + [old], spec)):
        jsonschema.validate(rep, SCHEMA)
        assert rep["suite"]["commit"] == "b" * 40 and rep["summary"] == {"pass": 2}
        for part in ("matrix", "findings", "implementations", "conventions"):
            assert stax not in json.dumps(rep[part]), part
        (g,) = rep["other_runs"]
        assert (g["commit"], g["label"], g["summary"]) == ("a" * 40, "a" * 12, {"fail": 1})
        md = render_md(rep)
        counted, apart = md.split("## Other runs (not counted in this report)")
        assert stax not in counted and "Summary: pass 2\n" in counted
        assert "commit aaaaaaaaaaaa" in apart and "not initialised to 1 and 0" in apart
        assert "commit aaaaaaaaaaaa" in render_html(rep)


def test_the_newest_commit_of_the_raw_records_is_counted(spec, monkeypatch):
    from bnconf.results.provenance import project_root
    from bnconf.report.assemble import build
    monkeypatch.chdir(ROOT)
    log = subprocess.run(["git", "rev-list", "--max-count=2", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    commits = log.stdout.split()
    if project_root() is None or len(commits) < 2:
        pytest.skip("needs a clone of bnconf with two commits")
    head, parent = commits
    older = [rec("torch.nn.BatchNorm2d", "cpu", c, "fail", commit=parent) for c in ("BN-INIT", "BN-AXES", "BN-MEAN")]
    rep = build(older + [rec("torch.nn.BatchNorm2d", "cpu", "BN-INIT", "pass", commit=head)], spec)
    assert rep["suite"]["commit"] == head and "newest" in rep["suite"]["selected"]
    assert rep["summary"] == {"pass": 1} and rep["other_runs"][0]["summary"] == {"fail": 3}


@pytest.mark.parametrize("gpu_first", [False, True])
def test_the_implementation_table_shows_each_devices_own_versions(spec, gpu_first):
    from bnconf.report.assemble import build
    from bnconf.report.html import render_html
    from bnconf.report.markdown import render_md
    from bnconf.report.sections import implementation_rows
    cpu = rec("torch.nn.BatchNorm2d", "cpu", "BN-INIT", "pass")
    gpu = rec("torch.nn.BatchNorm2d", "cuda", "BN-INIT", "pass", versions={"torch": "2.11.0+cu130"}, platform=H100)
    rep = build([gpu, cpu] if gpu_first else [cpu, gpu], spec)
    jsonschema.validate(rep, SCHEMA)
    rows = {r[2]: r[3] for r in implementation_rows(rep)}
    assert rows == {"cpu": "torch 2.13.0+cpu", "cuda": "torch 2.11.0+cu130"}
    assert "| `torch.nn.BatchNorm2d` | torch | cpu | torch 2.13.0+cpu |" in render_md(rep)
    assert "<td>cpu</td><td class='l'>torch 2.13.0+cpu</td>" in render_html(rep)
    assert {p["label"].split(" (")[0] for p in rep["environment"]["platforms"]} >= {H100["cpu"]}


def test_two_cpu_platforms_of_one_commit_are_two_rows(spec):
    from bnconf.report.assemble import build
    from bnconf.report.markdown import render_md
    amd = {"cpu": "AMD EPYC", "flags": ["avx512f"], "gpus": [], "machine": "x86_64", "os": "Linux"}
    recs = [rec("torch.nn.BatchNorm2d", "cpu", "BN-DTYPE-ACCUM", "pass", platform=H100),
            rec("torch.nn.BatchNorm2d", "cpu", "BN-DTYPE-ACCUM", "fail", platform=amd)]
    rep = build(recs, spec)
    rows = {r["platform"].split(" (")[0]: r["cells"]["BN-DTYPE-ACCUM"]["status"] for r in rep["matrix"]}
    assert rows == {"AMD EPYC": "fail", H100["cpu"]: "pass"}
    assert "on cpu (AMD EPYC" in render_md(rep)


def test_paths_from_other_machines_become_relative(tmp_path):
    from bnconf.report.assemble import build_report
    known = {"reason": "r", "link": "https://github.com/patrick-kidger/equinox/issues/1",
             "where": "/work/main/.tox/jax/lib/python3.11/site-packages/bnconf/adapters/known/"
                      "equinox.nn.BatchNorm[mode=batch].yaml:26"}
    note = ('Traceback: File "/work/main/.tox/jax/lib/python3.11/site-packages/jax/_src/core.py", line 3; '
            "known-deviation entry /tmp/site/bnconf/adapters/known/x.yaml:9 matches no result")
    r = rec("equinox.nn.BatchNorm[mode=batch]", "gpu", "BN-RUNVAR-BIASED", "known", known=known, note=note,
            reproducer="/root/out/gpu/repro/equinox.nn.BatchNorm_mode_batch_/gpu-float16-BN-RUNVAR-BIASED")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jsonl").write_text(json.dumps(r) + "\n")
    old = {k: v for k, v in r.items() if k not in ("bnconf", "platform")}
    (tmp_path / "gpu.jsonl").write_text(json.dumps(old) + "\n")
    paths = build_report([tmp_path / "raw" / "a.jsonl"], tmp_path / "out", archived_paths=[tmp_path / "gpu.jsonl"])
    assert_no_machine_path(paths)
    rep = json.loads(paths[0].read_text())
    (f,) = rep["findings"]
    assert f["known"]["where"] == "adapters/known/equinox.nn.BatchNorm[mode=batch].yaml:26"
    assert f["known"]["link"] == known["link"]
    assert f["reproducer"] == "repro/equinox.nn.BatchNorm_mode_batch_/gpu-float16-BN-RUNVAR-BIASED"
    assert f["reproducer_present"] is False and "(not in this checkout" in paths[1].read_text()
    assert 'File "jax/_src/core.py"' in f["note"] and "entry adapters/known/x.yaml:9 matches" in f["note"]
    (g,) = rep["other_runs"]
    assert g["label"] == "unstamped" and g["sources"] == [f"{tmp_path.name}/gpu.jsonl"]


def test_report_command_counts_raw_and_sets_the_gpu_half_apart(tmp_path, run_cli):
    (tmp_path / "raw").mkdir()
    (tmp_path / "gpu").mkdir()
    (tmp_path / "raw" / "torch.jsonl").write_text(json.dumps(rec("torch.nn.BatchNorm2d", "cpu", "BN-INIT", "pass")))
    (tmp_path / "gpu" / "g.jsonl").write_text(json.dumps(rec("torch.nn.BatchNorm2d", "cuda", "BN-INIT", "fail",
                                                             commit=None)))
    res = run_cli("report", "--out-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert f"counted: commit {'b' * 40}" in res.stdout and "1 record of other runs in 1 group listed apart" in res.stdout
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["summary"] == {"pass": 1} and rep["other_runs"][0]["sources"] == ["gpu/g.jsonl"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_html_loads_in_a_real_browser_without_console_errors(built):
    d, paths = built
    shot = d / "shot.png"
    res = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", f"--screenshot={shot}", "--window-size=1400,1000", paths[2].as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, res.stderr[-2000:]
    console = [l for l in res.stderr.splitlines() if "CONSOLE" in l and ("ERROR" in l or "Uncaught" in l)]
    assert console == []

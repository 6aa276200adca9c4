"""The report from a real audit: valid against its schema, readable in Markdown, and a
self-contained HTML page that a real browser loads without errors."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    raw = d / "raw.jsonl"
    for impl in ("snippet.002.numpy", "snippet.000.keras-old.BatchNormalization"):
        subprocess.run([sys.executable, "-m", "bnconf.worker", "--impl", impl, "--out", str(raw), "--max-examples",
                        "25", "--repro-dir", str(d / "repro")], check=True, cwd=ROOT, timeout=300)
    from bnconf.facts import run_facts
    from bnconf.records import append_jsonl
    append_jsonl(raw, run_facts(["torch"]))
    append_jsonl(raw, [{"implementation": "fault.segfault", "family": "extra", "profile": "torch", "device": "cpu",
                        "dtype": "*", "clause": "*", "status": "error", "note": "worker killed by signal SIGSEGV"}])
    from bnconf.report import build_report
    paths = build_report([raw], d / "out", commit="test")
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
    assert f["link"] == "../spec/SPEC.md#bn-axes" and f["case"] and f["reproduce"].startswith("python ")
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

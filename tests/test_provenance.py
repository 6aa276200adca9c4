"""The stamp every record carries: which bnconf code measured it and on what machine."""
import json
import subprocess

import pytest

from bnconf.results import provenance

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512_fp16 avx512_bf16 amx_bf16 amx_tile ht

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""
ARM = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm aes fphp asimdhp cpuid sve sve2 bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd4f
"""


@pytest.fixture
def fresh(monkeypatch):
    """provenance() is computed once per process; these tests change what it would see."""
    provenance._provenance.cache_clear()
    monkeypatch.delenv("BNCONF_COMMIT", raising=False)
    yield monkeypatch
    provenance._provenance.cache_clear()


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True,
                   capture_output=True)


def _clone(tmp_path, name="bnconf"):
    (tmp_path / "conformance").mkdir()
    (tmp_path / "conformance" / "x.py").write_text("A = 1\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.md").write_text("old\n")
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "x")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()


def test_x86_flags_are_the_relevant_ones_sorted_from_the_first_processor():
    model, flags = provenance.describe_cpu(X86)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == ["amx_bf16", "amx_tile", "avx", "avx2", "avx512_bf16", "avx512_fp16", "avx512bw", "avx512f",
                     "f16c", "fma", "sse4_2"]


def test_arm_features_and_a_model_from_implementer_and_part():
    model, flags = provenance.describe_cpu(ARM)
    assert model == "ARM implementer 0x41 part 0xd4f"
    assert flags == ["asimd", "asimdhp", "bf16", "fphp", "i8mm", "sve", "sve2"]


def test_platform_is_json_able_sorted_and_the_same_every_call():
    p = provenance.platform()
    assert list(p) == sorted(p) == ["cpu", "flags", "gpus", "machine", "os"]
    assert p["flags"] == sorted(p["flags"]) and set(p["flags"]) <= provenance.RELEVANT_FLAGS
    assert json.dumps(p, sort_keys=True) == json.dumps(provenance.platform(), sort_keys=True)


def test_the_commit_comes_from_the_environment_first(fresh, tmp_path):
    fresh.chdir(tmp_path)
    fresh.setenv("BNCONF_COMMIT", "abc123")
    assert provenance.provenance()["commit"] == "abc123"


def test_no_commit_outside_a_clone_of_bnconf(fresh, tmp_path):
    fresh.chdir(tmp_path)
    assert provenance.provenance()["commit"] is None
    other = tmp_path / "other"
    other.mkdir()
    _clone(other, name="not-bnconf")
    fresh.chdir(other)
    provenance._provenance.cache_clear()
    assert provenance.provenance() == {"commit": None, "dirty": None, "version": provenance.provenance()["version"]}


def test_head_of_the_clone_the_run_started_in_and_dirty_only_for_measuring_code(fresh, tmp_path):
    head = _clone(tmp_path)
    fresh.chdir(tmp_path / "conformance")
    assert provenance.provenance() == {"commit": head, "dirty": False, "version": provenance._version()}
    (tmp_path / "reports" / "report.md").write_text("rewritten by the run\n")
    provenance._provenance.cache_clear()
    assert provenance.provenance()["dirty"] is False
    (tmp_path / "conformance" / "x.py").write_text("A = 2\n")
    provenance._provenance.cache_clear()
    assert provenance.provenance()["dirty"] is True


def test_stamp_adds_both_in_place_and_deterministically(fresh, tmp_path):
    fresh.setenv("BNCONF_COMMIT", "abc123")
    a, b = {"clause": "BN-INIT"}, {"clause": "BN-INIT"}
    assert provenance.stamp(a) is a
    provenance.stamp(b)
    assert set(a) == {"clause", "bnconf", "platform"} and a["bnconf"]["commit"] == "abc123"
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    a["bnconf"]["commit"] = "changed"
    assert provenance.provenance()["commit"] == "abc123"   # a record's stamp is its own copy


def test_gpu_models_from_the_nvidia_driver(tmp_path):
    for bus, model in (("0000:1b:00.0", "NVIDIA H100 80GB HBM3"), ("0000:0a:00.0", "NVIDIA A100-SXM4-40GB")):
        (tmp_path / bus).mkdir()
        (tmp_path / bus / "information").write_text(f"Model: \t\t {model}\nIRQ:   \t 42\nBus Type: \t PCIe\n")
    assert provenance.gpus(str(tmp_path)) == ["NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3"]
    assert provenance.gpus(str(tmp_path / "none")) == []


def test_platform_label_names_cpu_flags_and_gpu():
    label = provenance.platform_label({"cpu": "AMD EPYC", "flags": ["avx512f"], "gpus": ["NVIDIA H100"],
                                       "machine": "x86_64", "os": "Linux"})
    assert label == "AMD EPYC (x86_64, Linux) avx512f; GPU NVIDIA H100"
    assert provenance.platform_label(None) == "platform not recorded"

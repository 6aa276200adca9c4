"""Where a record comes from: the bnconf code that measured it and the machine it ran on.

A record is only comparable with records of the same code on the same kind of machine: a
float16 result of XLA or torch can differ between an AMD and an Intel CPU (different
vector units), and a record of an older commit may show a failure today's code cannot
produce. `stamp` puts both into every record, so that the report can keep them apart.

Everything here is computed once per process and is deterministic (no timestamps), so the
same checkout on the same machine stamps the same bytes.
"""
from __future__ import annotations

import functools
import glob
import os
import platform as _platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import bnconf

# The CPU features that decide which kernel a framework dispatches to for float16, bfloat16
# and float32 (x86: /proc/cpuinfo "flags"; ARM: "Features", where asimd is NEON).
RELEVANT_FLAGS = frozenset({
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512dq",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "asimdhp", "fphp", "bf16", "i8mm", "sve", "sve2", "sme",
})
# What decides a record's values: the measuring code and its pins, not the reports the run
# itself rewrites (reports/ is tracked, and every tox environment rewrites it).
SOURCE_PATHS = ("conformance", "adapters", "spec", "pyproject.toml", "tox.ini")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def project_root(start: str | Path | None = None) -> Path | None:
    """The top of a bnconf clone containing `start` (default: the working directory), or None.
    tox installs bnconf as a wheel and runs commands from the project root, so the clone is
    found from where the run was started, not from where the package was imported."""
    top = _git(Path(start or os.getcwd()), "rev-parse", "--show-toplevel")
    if not top:
        return None
    pyproject = Path(top) / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return Path(top) if re.search(r'^name\s*=\s*"bnconf"', text, re.M) else None


def _version() -> str:
    try:
        return metadata.version("bnconf")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return bnconf.__version__


def _commit() -> tuple[str | None, bool | None]:
    env = os.environ.get("BNCONF_COMMIT")
    if env:
        return env.strip(), None
    root = project_root()
    if root is None:
        return None, None
    head = _git(root, "rev-parse", "HEAD")
    if not head:
        return None, None
    changes = _git(root, "status", "--porcelain", "--untracked-files=normal", "--", *SOURCE_PATHS)
    return head, (bool(changes) if changes is not None else None)


@functools.lru_cache(maxsize=None)
def _provenance() -> tuple:
    commit, dirty = _commit()
    return (("commit", commit), ("dirty", dirty), ("version", _version()))


def provenance() -> dict:
    """{"commit", "dirty", "version"} of the bnconf code running in this process. commit is
    BNCONF_COMMIT when set, else HEAD of the bnconf clone the run was started in, else None;
    dirty says whether its measuring code differed from that commit (None: unknown)."""
    return dict(_provenance())


def _first_block(text: str) -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (every core of a machine is the same model)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip().lower(), value.strip())
    return out


def describe_cpu(cpuinfo: str) -> tuple[str, list[str]]:
    """(model name, the relevant flags present, sorted) from the text of /proc/cpuinfo."""
    info = _first_block(cpuinfo)
    if info.get("model name"):
        model = info["model name"]
    elif info.get("cpu implementer"):  # ARM names the core by implementer and part numbers
        model = f"ARM implementer {info['cpu implementer']} part {info.get('cpu part', '?')}"
    else:
        model = _platform.processor() or _platform.machine() or "unknown"
    flags = set((info.get("flags") or info.get("features") or "").split())
    return model, sorted(flags & RELEVANT_FLAGS)


def gpus(root: str = "/proc/driver/nvidia/gpus") -> list[str]:
    """NVIDIA GPUs the driver lists, without starting nvidia-smi or a framework."""
    names = []
    for path in glob.glob(os.path.join(root, "*", "information")):
        try:
            for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return sorted(names)


@functools.lru_cache(maxsize=None)
def _platform_items() -> tuple:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:   # not Linux: the model from the standard library, flags unknown
        text = ""
    model, flags = describe_cpu(text)
    return (("cpu", model), ("flags", tuple(flags)), ("gpus", tuple(gpus())),
            ("machine", _platform.machine()), ("os", _platform.system()))


def platform() -> dict:
    """{"cpu", "flags", "gpus", "machine", "os"} of this machine: what can change a float16
    or float32 result between two machines running the same code and framework versions."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in _platform_items()}


def stamp(record: dict) -> dict:
    """Add "bnconf" (the measuring code) and "platform" (the machine) to `record` in place."""
    record["bnconf"] = provenance()
    record["platform"] = platform()
    return record


def platform_label(plat: dict | None) -> str:
    """A short human name of a platform, for report headings."""
    if not plat:
        return "platform not recorded"
    label = f"{plat.get('cpu')} ({plat.get('machine')}, {plat.get('os')})"
    if plat.get("flags"):
        label += " " + " ".join(plat["flags"])
    if plat.get("gpus"):
        label += "; GPU " + ", ".join(plat["gpus"])
    return label

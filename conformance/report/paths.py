"""Machine paths out of the report: records name files where they were measured (a tox
environment's site-packages, another machine's /root/out/...), and the report is shared.

A known-deviation file is named by its place in the repository (adapters/known/x.yaml:12);
a third-party file by its import path (jax/_src/core.py); a reproducer by its place
relative to the report (repro/<implementation>/<case>). This runs where the report is built,
so records written before these rules render cleanly too.
"""
from __future__ import annotations

import re
from pathlib import Path

from bnconf.results.provenance import project_root

# An absolute POSIX path inside free text (a note, a traceback); not a URL, not "a/b", not "../x".
_ABS = re.compile(r"(?<![\w.~/\\:-])/(?:[^\s/'\"`(),:;<>|]+/)+[^\s/'\"`(),:;<>|]*")
# installed subpackage -> its folder in the repository (pyproject's package-dir); the rest of
# bnconf/ is conformance/
_PACKAGE_DIRS = {"adapters/": "adapters/", "spec/normative/": "spec/"}
_TOP_LEVEL = ("conformance", "adapters", "spec", "tests", "examples", "reports", "scripts")
REPRO_FOLDER = "repro"


def checkout_roots() -> list[str]:
    """bnconf checkouts on this machine: the clone the report is built in, and the source tree
    of an editable install."""
    roots = {project_root()}
    here = Path(__file__).resolve().parents[2]   # conformance/report/paths.py -> the checkout
    if (here / "pyproject.toml").exists() and (here / "conformance").is_dir():
        roots.add(here)
    return sorted((str(r) for r in roots if r), key=len, reverse=True)


def _package_to_repo(rest: str, installed: bool = True) -> str:
    """bnconf/<rest> -> its path in the repository: as installed (pyproject's package-dir), or
    in a checkout that is itself named bnconf."""
    if not installed and rest.split("/", 1)[0] in _TOP_LEVEL:
        return rest
    for package, folder in _PACKAGE_DIRS.items():
        if rest.startswith(package):
            return folder + rest[len(package):]
    return "conformance/" + rest


def relative_path(path: str, roots: list[str] | None = None) -> str:
    """A path as the reader of a shared report can find it, never a machine path."""
    for root in (checkout_roots() if roots is None else roots):
        if path.startswith(root.rstrip("/") + "/"):
            rel = path[len(root.rstrip("/")) + 1:]
            if not rel.startswith(".tox/"):
                return rel
    m = re.search(r"/(?:site|dist)-packages/(.*)$", path)
    if m:
        inner = m.group(1)
        return _package_to_repo(inner[len("bnconf/"):]) if inner.startswith("bnconf/") else inner
    i = path.rfind("/bnconf/")
    if i >= 0:
        return _package_to_repo(path[i + len("/bnconf/"):], installed=False)
    tail = [p for p in path.split("/") if p][-2:]
    return "…/" + "/".join(tail)


def scrub_text(text: str, roots: list[str] | None = None) -> str:
    if "/" not in text:
        return text
    roots = checkout_roots() if roots is None else roots
    return _ABS.sub(lambda m: relative_path(m.group(0), roots), text)


def scrub(obj, roots: list[str] | None = None):
    """`obj` (a record, or any JSON value) with every machine path in its strings rewritten."""
    roots = checkout_roots() if roots is None else roots
    if isinstance(obj, str):
        return scrub_text(obj, roots)
    if isinstance(obj, dict):
        return {k: scrub(v, roots) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v, roots) for v in obj]
    return obj


def reproducer(path: str | None, out_dir: Path | None) -> tuple[str | None, bool | None]:
    """(the reproducer folder relative to the report, whether it is there now).

    The run writes reproducers to <report dir>/repro/<implementation>/<case> (the pytest
    plugin and `bnconf run` both default to reports/repro); they are not committed, so a
    report read in a fresh checkout cites folders that the next run writes again."""
    if not path or str(path).startswith("("):   # "(reproducer not written: ...)"
        return None, None
    p = Path(path)
    if out_dir is not None and p.is_absolute() and p.exists():
        try:
            return p.resolve().relative_to(Path(out_dir).resolve()).as_posix(), True
        except ValueError:
            pass
    rel = "/".join([REPRO_FOLDER, *p.parts[-2:]])
    return rel, (None if out_dir is None else (Path(out_dir) / rel).is_dir())


def source_name(path: str | Path, out_dir: Path) -> str:
    """A raw file named relative to the report when it lies below it, else by its folder and name."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path(out_dir).resolve()).as_posix()
    except ValueError:
        return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def clean_record(r: dict, out_dir: Path | None, roots: list[str] | None = None) -> dict:
    """A copy of record `r` whose paths a reader of the report can follow: its reproducer
    relative to the report (with "_repro_present"), every other path scrubbed."""
    out = scrub({k: v for k, v in r.items() if k != "reproducer"}, roots)
    if r.get("reproducer"):
        rel, present = reproducer(r["reproducer"], out_dir)
        out["reproducer"] = rel if rel else scrub_text(str(r["reproducer"]), roots)
        if rel:
            out["_repro_present"] = present
    return out

"""Spec lint: every clause ID cited in code or tests is defined, every defined clause is
tested (or explicitly planned), every clause's `check` names a real check, and every
capability a clause `needs` is one an implementation can declare."""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from bnconf.adapters._protocol import Capabilities, SyncCapabilities
from bnconf.cases.capabilities import DERIVED_NEEDS
from bnconf.checks.registry import CHECKS, EMITS
from bnconf.checks.sync import SYNC_EMITS
from bnconf.spec.loader import Spec

CITE = re.compile(r"\bBN-[A-Z0-9]+(?:-[A-Z0-9]+)*\b")


def cited_ids(roots) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(root.rglob("*.py")) + sorted(root.rglob("*.yaml"))
        for f in files:
            if "spec" in f.parts and f.suffix == ".yaml" and f.name == "batchnorm.yaml":
                continue
            for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                for m in CITE.finditer(line):
                    found.setdefault(m.group(0), []).append(f"{f}:{i}")
    return found


def lint(spec: Spec, roots) -> list[str]:
    problems = []
    cited = cited_ids(roots)
    emitted = {c for cs in list(EMITS.values()) + list(SYNC_EMITS.values()) for c in cs}
    known_checks = set(CHECKS) | set(SYNC_EMITS)
    capabilities = {f.name for f in fields(Capabilities) + fields(SyncCapabilities)} | set(DERIVED_NEEDS)
    for cid, where in sorted(cited.items()):
        if cid not in spec.clauses:
            problems.append(f"{where[0]}: cites {cid}, which spec/batchnorm.yaml does not define")
    for c in spec.clauses.values():
        line = spec.lines.get(c.id)
        if c.check not in known_checks and not c.planned:
            problems.append(f"{spec.path}:{line}: {c.id}: check {c.check!r} is not a known check")
        for need in c.needs:
            for name in (need if isinstance(need, tuple) else (need,)):
                if name not in capabilities:
                    problems.append(f"{spec.path}:{line}: {c.id}: needs {name!r}, which is no capability "
                                    "(adapters/_protocol.py) and none derived from them (cases/capabilities.py)")
        if not c.planned and not c.withdrawn and c.id not in emitted:
            problems.append(f"{spec.path}:{line}: {c.id} is defined but no check emits it (tested by nothing)")
        if c.planned and c.id in emitted:
            problems.append(f"{spec.path}:{line}: {c.id} is marked planned but a check emits it")
    return problems

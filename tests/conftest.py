import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50, database=None)
settings.load_profile(os.environ.get("BNCONF_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def assert_verdict():
    """A user audit's verdict, its exact set of violated clauses and its scope's layouts, stated
    before the run; on a mismatch, each violation's and error's clause and message."""
    def check(rep, verdict, violated, scope):
        got = {v["clause"] for v in rep.violations}
        assert (rep.verdict, got) == (verdict, violated), \
            [(v["clause"], v["message"][:300]) for v in rep.violations] \
            + [(e["clause"], e.get("message", "")[:300]) for e in rep.errors]
        assert tuple(rep.scope["layouts"]) == scope, rep.scope
    return check


@pytest.fixture(scope="session")
def spec():
    from bnconf.spec.loader import get_spec
    return get_spec()


@pytest.fixture
def run_cli():
    import subprocess

    def run(*args, cwd=ROOT, env=None, timeout=600):
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([sys.executable, "-m", "bnconf.frontends.cli", *args], cwd=cwd, capture_output=True, text=True,
                              env=e, timeout=timeout)
    return run


@pytest.fixture(scope="module")
def audit_torch_module(tmp_path_factory):
    """audit(source, class name, seed): a user's torch module written to a file and audited as
    `bnconf audit FILE:NAME --kind torch-module --profile torch` would (quota 20, no fingerprint)."""
    import bnconf
    files = {}

    def audit(source, name, seed=0):
        if source not in files:
            files[source] = tmp_path_factory.mktemp("module") / "mods.py"
            files[source].write_text(source)
        return bnconf.audit(f"{files[source]}:{name}", "torch", kind="torch-module", quota=20, seed=seed,
                            fingerprint=False, shrink_budget=3)
    return audit

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50, database=None)
settings.load_profile(os.environ.get("BNCONF_HYPOTHESIS_PROFILE", "ci"))


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

"""One pytest item per (implementation, clause). Items come from the spec and the registry
(no cases are generated at import or collection time); the audit runs once per session,
each implementation in its own process, and every item reads its clause's records."""
import warnings

import pytest

from bnconf.frontends.pytest_plugin import plan, results_for
from bnconf.report import findings
from bnconf.spec.loader import get_spec

OK = ("pass", "known")


class ShouldWarning(UserWarning):
    """A SHOULD clause not met: shown in the summary, fails only with --bnconf-strict."""


def pytest_generate_tests(metafunc):
    if "bnconf_item" in metafunc.fixturenames:
        items = plan(metafunc.config)
        metafunc.parametrize("bnconf_item", items, ids=[f"{i}::{c}" for i, c in items])


def _message(r):
    return findings.text(findings.from_record(r, get_spec()))


def test_clause(bnconf_item, request):
    """Every planned (implementation, clause) ends with exactly one verdict: a missing record
    or an error fails the item, a SHOULD clause not met warns (fails with --bnconf-strict),
    and only a clause the implementation cannot be asked about is skipped, with the reason."""
    impl, clause = bnconf_item
    recs = results_for(request.config, impl, clause)
    if not recs:
        pytest.fail(f"{impl}: no record for {clause} although the spec applies it to this implementation's "
                    "profile (the audit did not report on it)", pytrace=False)
    strict = request.config.getoption("bnconf_strict")
    bad = [r for r in recs if r["status"] in ("fail", "unexpected_pass", "error") or (strict and r["status"] == "warn")]
    if bad:
        pytest.fail("\n".join(_message(r) for r in bad), pytrace=False)
    for r in recs:
        if r["status"] == "warn":
            warnings.warn(ShouldWarning(_message(r)))
    if all(r["status"] in ("unsupported", "not_run", "blocked") for r in recs):
        pytest.skip("; ".join(sorted({f"{r['status']}: {r.get('note')}" if r["status"] != "blocked" else
                                      f"{findings.blocked_by(r.get('blocked_by', []))}: fails only because that "
                                      "clause does (its item reports it)" for r in recs})))
    assert all(r["status"] in OK + ("warn", "unsupported", "not_run", "blocked") for r in recs), \
        sorted({r["status"] for r in recs})

"""pytest plugin: put a bnconf audit in a test suite.

    pytest --pyargs bnconf.suite --bnconf-target my_bn.py:batch_norm --bnconf-profile torch
    pytest --pyargs bnconf.suite --bnconf-family torch --bnconf-raw reports/raw/torch.jsonl
"""
from __future__ import annotations

from pathlib import Path

from bnconf.cases import layouts
from bnconf.frontends.user_audit import audit
from bnconf.results.records import audit_report_records, read_jsonl
from bnconf.running.call_templates import TEMPLATE_OPTIONS
from bnconf.running.registry import family_implementations, find
from bnconf.running.runner import run_many
from bnconf.running.sync_audit import ATTRIBUTED
from bnconf.running.targets import KINDS
from bnconf.spec.loader import get_spec


def pytest_addoption(parser):
    g = parser.getgroup("bnconf", "Batch Normalization conformance")
    g.addoption("--bnconf-target", default=None, help="your BN: path/to/file.py:NAME or package.module:NAME")
    g.addoption("--bnconf-profile", default=None, help="the profile your BN claims (torch, keras, flax, ...)")
    g.addoption("--bnconf-kind", default="numpy", choices=KINDS)
    for what in TEMPLATE_OPTIONS:   # frontends/cli.py: the same templates as `bnconf audit --call ...`
        g.addoption(f"--bnconf-{what}", default=None, help=f"as `bnconf audit --{what}`")
    g.addoption("--bnconf-layouts", default=None, help="the layouts your BN supports, e.g. NC,NCHW "
                "(default: every candidate it does not refuse with NotImplementedError)")
    g.addoption("--bnconf-family", action="append", default=[], help="audit a built-in family (repeatable)")
    g.addoption("--bnconf-impl", action="append", default=[], help="audit a built-in implementation (repeatable)")
    g.addoption("--bnconf-raw", default="reports/raw/results.jsonl", help="where raw records go")
    g.addoption("--bnconf-cases-per-clause", type=int, default=None,
                help="generated cases per clause per implementation (default 100)")
    g.addoption("--bnconf-max-examples", type=int, default=None, help="cap on all cases per implementation")
    g.addoption("--bnconf-jobs", type=int, default=None, help="implementations audited side by side")
    g.addoption("--bnconf-seed", type=int, default=0)
    g.addoption("--bnconf-strict", action="store_true", default=False,
                help="a SHOULD clause not met fails its item (default: a warning)")
    g.addoption("--bnconf-timeout", type=float, default=900.0, help="seconds per implementation process")


def _impl_names(config):
    names = []
    for fam in config.getoption("bnconf_family"):
        names += [(i.name, i.profile, "data_parallel" if getattr(i, "sync", False) else "single")
                  for i in family_implementations(fam)]
    for n in config.getoption("bnconf_impl"):
        i = find(n)
        names.append((i.name, i.profile, "data_parallel" if getattr(i, "sync", False) else "single"))
    return names


def plan(config) -> list[tuple[str, str]]:
    """(implementation, clause) pairs from the spec: what will be tested, before any case."""
    spec = get_spec()
    out = []
    target = config.getoption("bnconf_target")
    if target:
        prof = spec.profile(config.getoption("bnconf_profile") or "torch")
        out += [(target, c.id) for c in spec.clauses_for(prof) if not c.planned]
    for name, profile, scope in _impl_names(config):
        out += [(name, c.id) for c in spec.clauses_for(spec.profile(profile), scope)]
        if scope == "data_parallel":   # single-device clauses a cross-replica finding may be attributed to
            out += [(name, cid) for cid in ATTRIBUTED]
    return out


_RESULTS: dict = {}


def _run(config) -> list[dict]:
    key = id(config)
    if key in _RESULTS:
        return _RESULTS[key]
    records: list[dict] = []
    n = config.getoption("bnconf_max_examples")
    target = config.getoption("bnconf_target")
    if target:
        prof = config.getoption("bnconf_profile") or "torch"
        declared = config.getoption("bnconf_layouts")
        rep = audit(target, prof, kind=config.getoption("bnconf_kind"), max_examples=n,
                    layouts=layouts.parse(declared) if declared else None,
                    **{w: config.getoption(f"bnconf_{w}") for w in TEMPLATE_OPTIONS},
                    quota=config.getoption("bnconf_cases_per_clause") or 100,
                    seed=config.getoption("bnconf_seed"), fingerprint=False)
        records += audit_report_records(rep, config.getoption("bnconf_seed"))
    names = _impl_names(config)
    if names:
        out = Path(config.getoption("bnconf_raw"))
        impls = [find(nm) for nm, *_ in names]
        run_many(impls, out, max_examples=n, seed=config.getoption("bnconf_seed"),
                 quota=config.getoption("bnconf_cases_per_clause"), jobs=config.getoption("bnconf_jobs"),
                 timeout_s=config.getoption("bnconf_timeout"), repro_dir=str(out.parent.parent / "repro"),
                 echo=lambda m: print(m, flush=True))
        records += [r for r in read_jsonl([out]) if r.get("kind") != "fingerprint"]
    _RESULTS[key] = records
    return records


def results_for(config, impl, clause) -> list[dict]:
    recs = _run(config)
    own = [r for r in recs if r["implementation"] == impl and r["clause"] == clause]
    whole = [r for r in recs if r["implementation"] == impl and r["clause"] == "*" and r.get("device") == "cpu"]
    return own or whole

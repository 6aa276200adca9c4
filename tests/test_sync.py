"""Cross-replica BN (issue #7): strategies reach every corner they promise, the sync checks
pass a correct data-parallel kernel and catch each seeded fault under its clause, and a real
torch.distributed pool is bounded in time and leaves no process behind."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnconf.adapters._protocol import sync_capabilities
from bnconf.spec.loader import get_spec
from bnconf.cases.pinned import sync_pinned_for
from bnconf.cases.sync_strategies import sync_cases
from bnconf.cases.sync_case import SyncCase, materialize
from bnconf.running.sync_audit import audit_sync
from bnconf.catalogs.sync_faults import SYNC_FAULTS, implementation


def _draws(caps, n=300):
    seen = []

    @settings(max_examples=n, database=None, deadline=None)
    @given(sync_cases(caps))
    def collect(c):
        seen.append(c)
    collect()
    return seen


@pytest.mark.clause("BN-SYNC-GLOBAL", "BN-SYNC-WEIGHTED")
def test_strategy_reaches_replica_counts_splits_and_masks():
    seen = _draws(sync_capabilities(ragged=True, mask=True, empty_replica=True))
    assert {c.replicas for c in seen} >= {2, 8}
    assert any(c.even for c in seen) and any(len(set(c.counts)) > 1 for c in seen)
    assert any(c.masked for c in seen) and any(0 in c.counts for c in seen)
    assert all(c.n_global >= 2 for c in seen)


def test_strategy_stays_within_capabilities():
    # an engine that needs equal shapes and has no mask only ever gets even, unmasked splits
    seen = _draws(sync_capabilities(replicas=(2, 4)), 150)
    assert all(c.even and not c.masked and 2 <= c.replicas <= 4 for c in seen)
    # mask but not ragged: uneven splits come padded to equal rows, with a mask
    seen = _draws(sync_capabilities(mask=True), 150)
    assert all(len(set(c.rows)) == 1 for c in seen)
    assert all(c.masked for c in seen if len(set(c.counts)) > 1)


@given(st.integers(0, 2 ** 31 - 1))
@settings(max_examples=30, deadline=None)
def test_materialize_global_batch_is_the_real_rows(seed):
    case = SyncCase(seed=seed, counts=(1, 3, 2), rows=(4, 4, 4), inner=(2, 3), feature_axis=2, masked=True)
    a = materialize(case)
    assert a["x_global"].shape == (6, 2, 3)
    assert [int(r.sum()) for r in a["real"]] == [1, 3, 2]
    for x, dy, real in zip(a["x"], a["dy"], a["real"]):
        assert np.all(dy[~real] == 0)                    # masked rows carry no loss
        if (~real).any() and real.any():                 # padding is far from the data
            assert np.abs(x[~real]).max() > np.abs(x[real]).max()
    again = materialize(case)
    assert all(np.array_equal(u, v) for u, v in zip(a["x"], again["x"]))


@pytest.mark.clause("BN-SYNC-GLOBAL", "BN-SYNC-WEIGHTED", "BN-SYNC-CONSISTENT", "BN-SYNC-GRAD")
@pytest.mark.parametrize("fault", sorted(SYNC_FAULTS))
def test_sync_fault_catalog(fault):
    """The correct kernel has no finding; every seeded fault is caught under its clause."""
    spec = get_spec()
    impl = implementation(fault)
    res = audit_sync(impl, "cpu", spec, spec.profile(impl.profile), max_examples=80, seed=0, shrink_budget=0)
    failed = {clause for (clause, _), t in res.tallies.items() if t.failed}
    if SYNC_FAULTS[fault] is None:
        worst = max(t.worst.comparison.ratio for t in res.tallies.values() if t.worst and t.worst.comparison)
        assert not failed, {k: (t.failing.note, t.failing.comparison.describe()) for k, t in res.tallies.items()
                            if t.failed}
        assert worst <= 1.0
    else:
        assert SYNC_FAULTS[fault] in failed, failed


def test_unweighted_average_is_named_in_the_finding():
    spec = get_spec()
    impl = implementation("unweighted")
    res = audit_sync(impl, "cpu", spec, spec.profile(impl.profile), max_examples=40, seed=1, shrink_budget=0)
    notes = {t.failing.note for (c, _), t in res.tallies.items() if c == "BN-SYNC-WEIGHTED" and t.failed}
    assert any("unweighted average" in n for n in notes), notes


def test_pinned_sync_cases_fit_capabilities():
    for caps in (sync_capabilities(), sync_capabilities(mask=True), sync_capabilities(ragged=True, replicas=(2, 3))):
        for c in sync_pinned_for(caps):
            lo, hi = caps.replicas
            assert lo <= c.replicas <= hi
            assert c.even or caps.ragged or caps.mask


@pytest.mark.slow
def test_torch_syncbatchnorm_on_cpu_is_unsupported_with_torchs_message_and_leaves_no_process():
    """A real pool of 8 gloo ranks runs SyncBatchNorm on CPU tensors; torch's refusal comes
    back as Unsupported, and closing the pool leaves no rank process alive."""
    torch = pytest.importorskip("torch")
    from bnconf.adapters import sync_torch
    from bnconf.adapters._protocol import Unsupported
    impl = next(i for i in sync_torch.implementations() if i.name == "torch.nn.SyncBatchNorm[gloo]")
    case = SyncCase(seed=0, counts=(2, 3), rows=(2, 3), inner=(3,), feature_axis=1)
    a = materialize(case)
    params = {"replicas": 2, "num_features": 3, "feature_axis": 1, "rank": 2, "dtype": "float32",
              "momentum": 0.1, "eps": 1e-5, "weight": None, "bias": None, "masked": False}
    with pytest.raises(Unsupported, match="SyncBatchNorm expected input tensor to be on GPU"):
        impl.run(params, {"x": a["x"], "dy": a["dy"], "mask": None}, "cpu")
    pool = sync_torch._POOLS.pop(("gloo", "cpu"))
    procs = list(pool.procs)
    assert all(p.is_alive() for p in procs)
    pool.close()
    assert not any(p.is_alive() for p in procs)
    assert torch.__version__


@pytest.mark.slow
def test_hung_collective_is_bounded_and_cleaned_up(monkeypatch):
    """Only rank 0 of a 2-replica step gets its batch: its all_gather waits for rank 1 forever.
    The pool must give up within its step limit, kill every rank and say so. SyncBatchNorm
    reaches its collective only on a GPU, so this runs where one is present."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("SyncBatchNorm reaches its collective only on a GPU (CPU tensors are refused first)")
    from bnconf.adapters import sync_torch
    monkeypatch.setattr(sync_torch, "STEP_TIMEOUT_S", 20.0)
    pool = sync_torch._Pool("gloo", "cuda")
    procs = list(pool.procs)
    case = SyncCase(seed=0, counts=(2, 3), rows=(2, 3), inner=(3,), feature_axis=1)
    a = materialize(case)
    params = {"replicas": 2, "num_features": 3, "feature_axis": 1, "rank": 2, "dtype": "float32",
              "momentum": 0.1, "eps": 1e-5, "weight": None, "bias": None, "masked": False}
    with pytest.raises(TimeoutError, match="hung collective"):
        pool.step(params, {"x": a["x"], "dy": a["dy"], "mask": None}, ranks=[0])
    assert not any(p.is_alive() for p in procs)

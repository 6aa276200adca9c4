"""Every case of every peer data file (tests/peers/data/*.json) replayed on the oracle under
its profile, at the peer's own tolerance. A case that misses is a disagreement between the
spec and a framework's own maintainers: fix the oracle or the spec, never the case."""
import pytest

from expectations import DATA, all_cases, replay

CASES = all_cases()


def test_every_peer_source_is_there():
    files = sorted(p.stem for p in DATA.glob("*.json"))
    assert files, f"no peer data under {DATA}"


@pytest.mark.parametrize("source,case", [(s, c) for _, s, c in CASES], ids=[i for i, _, _ in CASES])
def test_oracle_reproduces_peer_case(source, case, spec):
    where = f"{case.get('url', source['url'])}#L{case.get('line', '')} ({case.get('test', case['id'])})"
    for step, quantity, ratio, detail in replay(case, spec):
        assert ratio <= 1, f"step {step} {quantity}: {ratio:.3g}x the peer's tolerance, {detail}; peer: {where}"

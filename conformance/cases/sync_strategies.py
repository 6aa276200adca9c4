"""Hypothesis strategies for cross-replica cases (SyncCase): replica counts, even and
uneven splits, masks and padding, within what the data-parallel wrapper declares."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from bnconf.adapters._protocol import SyncCapabilities
from bnconf.cases.strategies import EPS_VALUES, KAPPAS, options
from bnconf.cases.sync_case import SyncCase


@st.composite
def sync_cases(draw, caps: SyncCapabilities, focus=None, pool=None):
    """A SyncCase within `caps`: 2..8 replicas, even and uneven splits (ragged arrays where
    the engine takes them, padding plus a mask where it needs equal shapes), one replica
    with no real rows where the engine allows it. focus: a clause's `focus` (split). pool: frames from
    sync_layout_pool (per-device shapes fixed, the real rows per replica still drawn)."""
    low = 0 if caps.empty_replica else 1
    if pool:
        want = (focus or {}).get("split")
        fitting = [f for f in pool if not want or ("uneven" in want) == f[5]] or list(pool)
        R, width, inner, fa, dtype, masked = draw(st.sampled_from(fitting), label="frame")
        if masked:
            counts = [draw(st.integers(low, width), label=f"rows of replica {r}") for r in range(R)]
            if want and "uneven" in want and "even" not in want and len(set(counts)) == 1:
                counts[0] = counts[0] - 1 if counts[0] > max(low, 1) else counts[0] + 1
            spatial = int(np.prod(inner)) // inner[fa - 1]
            if sum(counts) * spatial < 2:
                counts[0] = max(counts[0], 2)
            rows = [width] * R
        else:
            counts, rows = [width] * R, [width] * R
        inner = list(inner)
    else:
        lo, hi = caps.replicas
        R = draw(st.integers(lo, hi), label="replicas")
        uneven_ok = caps.ragged or caps.mask
        split = draw(st.sampled_from(options(["even", "uneven"] if uneven_ok else ["even"], focus, "split")),
                     label="split")
        if split == "even":
            n = draw(st.integers(1, 6), label="rows per replica")
            counts = [n] * R
        else:
            counts = [draw(st.integers(low, 8), label=f"rows of replica {r}") for r in range(R)]
            if len(set(counts)) == 1:
                counts[0] = counts[0] + 1 if counts[0] < 8 else counts[0] - 1
        masked = False
        if caps.mask and (split == "uneven" and not caps.ragged):
            masked = True
        elif caps.mask:
            masked = draw(st.booleans(), label="masked")
        if masked:
            width = max(counts) + draw(st.integers(0, 2), label="padding rows")
            rows = [width] * R
        else:
            rows = list(counts)
        rank = draw(st.sampled_from(sorted(caps.ranks)), label="rank")
        where = draw(st.sampled_from(sorted(caps.feature_axes)), label="feature axis")
        C = draw(st.sampled_from([1, 2, 3, 4, 8]), label="channels")
        spatial = [draw(st.integers(1, 4), label=f"spatial {i}") for i in range(rank - 2)]
        inner = [C] + spatial if where == "first" else spatial + [C]
        fa = 1 if where == "first" else rank - 1
        if sum(counts) * int(np.prod(spatial or [1])) < 2:      # at least two values per channel
            counts[0] += 1
            rows[0] = max(rows[0], counts[0])
            if masked:
                rows = [max(rows)] * R
        dtype = draw(st.sampled_from(sorted(caps.dtypes)), label="dtype")
    affine = draw(st.sampled_from(["random", "random", "default"] if caps.default_init else ["random"]),
                  label="affine")
    kappa = draw(st.sampled_from(KAPPAS[:7]), label="|mean|/std")
    return SyncCase(
        seed=draw(st.integers(0, 2 ** 31 - 1), label="seed"), counts=tuple(counts), rows=tuple(rows),
        inner=tuple(inner), feature_axis=fa, dtype=dtype,
        momentum=draw(st.sampled_from([0.1, 0.5, 0.9, 0.99]) | st.floats(0.01, 0.99), label="momentum"),
        eps=draw(st.sampled_from(EPS_VALUES), label="eps"), kappa=float(kappa),
        log_scale=float(draw(st.sampled_from([-1.0, 0.0, 0.0, 1.0]), label="log10 scale")),
        affine=affine, masked=masked)


def sync_layout_pool(caps: SyncCapabilities, seed: int, per_dtype: int) -> list[tuple]:
    """Frames (replicas, rows per replica, inner shape, feature axis, dtype, masked) for
    engines that compile per per-device shape and take a mask: unmasked frames give even
    splits, masked ones uneven splits (the real rows drawn per case, the shapes fixed)."""
    rng = np.random.default_rng([seed, 0x5B])
    pick = lambda opts: opts[int(rng.integers(len(opts)))]  # noqa: E731
    lo, hi = caps.replicas
    out = []
    for dtype in caps.dtypes:
        for masked in ([False, True] if caps.mask else [False]):
            for _ in range(per_dtype):
                rank, where = pick(sorted(caps.ranks)), pick(sorted(caps.feature_axes))
                C = pick([1, 2, 3, 4, 8])
                spatial = [pick([1, 2, 3, 4]) for _ in range(rank - 2)]
                inner = tuple([C] + spatial if where == "first" else spatial + [C])
                width = pick(list(range(2, 9)) if masked else list(range(1, 7)))
                out.append((pick(list(range(lo, hi + 1))), width, inner, 1 if where == "first" else rank - 1,
                            dtype, masked))
    return out

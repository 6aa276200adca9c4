"""Hypothesis strategies for conformance cases, shared by every implementation.

A case is a few drawn parameters plus a seed (arrays come from NumPy, see case.py), so
generation is fast and a case shrinks field by field. Draws stay inside what the
implementation declares it can do; what it cannot do is reported as unsupported, never
drawn and silently skipped. Value distributions are controlled: |mean|/std per channel
from 0 to 1e4, tiny and large scales, constant channels, NaN/Inf in one channel.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from bnconf.adapters._protocol import sync_capabilities  # noqa: F401  (re-exported)

from bnconf.cases.case import DEFAULT, Case

KAPPAS = (0.0, 0.5, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 1e4)
LOG_SCALES = (-3.0, -1.0, 0.0, 0.0, 1.0, 3.0)
EPS_VALUES = (1e-5, 1e-3, 1e-2, 0.1, 1e-4)
# Largest |x| we let a dtype hold, so the mean plus a few std never overflows it.
DTYPE_MAX_ABS = {"float16": 2e3, "bfloat16": 1e30, "float32": 1e30, "float64": 1e300}
MAX_ELEMENTS = 4096


def _feature_axis(rank: int, where: str) -> int:
    return 1 if where == "first" else rank - 1


SHAPE_KINDS = ("normal",) * 8 + ("one_value", "empty")
CHANNELS = (1, 2, 3, 4, 5, 8, 16, 64)
SPECIALS = ("none",) * 9 + ("constant", "nan", "inf")


def make_shape(pick, ranks, feature_axes, kind, max_elements=MAX_ELEMENTS):
    """(shape, feature_axis) from `pick(options, label)`: batch first, feature axis first or
    last, small and large channels, the degenerate n = 1 per channel and the empty batch.
    One definition for both a hypothesis draw and a layout pool's NumPy draw."""
    rank = pick(sorted(ranks), "rank")
    fa = _feature_axis(rank, pick(sorted(feature_axes), "feature axis"))
    channels = pick(CHANNELS, "channels")
    dims = [0] * rank
    dims[fa] = channels
    others = [a for a in range(rank) if a != fa]
    if kind == "one_value":
        for a in others:
            dims[a] = 1
        return tuple(dims), fa
    for a in others:
        dims[a] = pick(tuple(range(1, 9 if a == 0 else 7)), f"dim {a}")
    while int(np.prod(dims)) > max_elements:
        a = max(others, key=lambda i: dims[i])
        dims[a] = max(1, dims[a] // 2)
    if int(np.prod(dims)) // channels < 2:
        dims[others[0]] = 2
    if kind == "empty" and fa != 0:
        dims[0] = 0
    return tuple(dims), fa


@st.composite
def shapes(draw, ranks, feature_axes, empty_batch=True, max_elements=MAX_ELEMENTS, kinds=None):
    kinds = [k for k in (kinds or SHAPE_KINDS) if empty_batch or k != "empty"] or ["normal"]
    kind = draw(st.sampled_from(kinds), label="shape kind")
    return make_shape(lambda opts, label: draw(st.sampled_from(opts), label=label), ranks, feature_axes, kind,
                      max_elements)


def _shape_kind(shape, fa) -> str:
    if len(shape) and shape[0] == 0:
        return "empty"
    return "one_value" if int(np.prod(shape)) == shape[fa] else "normal"


def layout_pool(caps: dict, seed: int, per_dtype: int) -> list[tuple]:
    """A run's finite set of (shape, feature_axis, dtype) layouts, drawn from the seed, for
    implementations that compile a program per input shape (XLA, graph modes): every case of
    the run takes its layout from here, so compiled programs are reused and the time goes
    to cases, not to the compiler. Each dtype gets `per_dtype` ordinary layouts (float32
    twice as many), one with a single value per channel and one empty batch, so every
    focus (spec/batchnorm.yaml) can be met. A different seed gives a different pool."""
    rng = np.random.default_rng([seed, 0xB0])
    pick = lambda opts, label: opts[int(rng.integers(len(opts)))]  # noqa: E731
    out = []
    for dtype in caps["dtypes"]:
        kinds = ["normal"] * (per_dtype * (2 if dtype == "float32" else 1)) + ["one_value"]
        if caps.get("empty_batch", True):
            kinds.append("empty")
        for kind in kinds:
            shape, fa = make_shape(pick, caps["ranks"], caps["feature_axes"], kind)
            out.append((shape, fa, dtype))
    return out


# What a case must look like to exercise a clause is the clause's `focus` in the spec
# (spec/batchnorm.yaml): the scheduler (quota.py) aims cases at the clauses short of their
# quota, and counts a case for a clause when the case's traits meet its focus (`meets`),
# never by what the implementation returned: the case sequence of a seed is then the same
# whatever the outcomes, on every machine.


def merge_focus(a: dict, b: dict) -> dict | None:
    """Both foci at once, or None where they contradict (e.g. empty batch and a constant channel)."""
    out = dict(a)
    for k, v in b.items():
        both = tuple(x for x in out.get(k, v) if x in v)
        if not both:
            return None
        out[k] = both
    return out


# |mean|/std from which a case is ill-conditioned (spec tolerance.ill_conditioned_kappa,
# BN-VAR-STABLE); KAPPAS below it are "low".
HIGH_KAPPA = 10.0


def case_traits(case: Case) -> dict:
    """The traits a focus is written in, read off the case alone (no outcome)."""
    mom = "default" if case.momentum == DEFAULT else ("none" if case.momentum is None else "value")
    return {"shape": _shape_kind(case.shape, case.feature_axis), "special": case.special, "affine": case.affine,
            "eps": "default" if case.eps == DEFAULT else "value", "momentum": mom,
            "track": case.track_running_stats, "dtype": case.dtype,
            "kappa": "high" if case.kappa >= HIGH_KAPPA else "low"}


def meets(focus: dict, case) -> bool:
    """Whether a case has every trait the focus asks for (single-device or cross-replica)."""
    traits = sync_case_traits(case) if hasattr(case, "counts") else case_traits(case)
    return all(traits.get(k) in v for k, v in focus.items())


def _options(base, focus, key):
    """The caps' options for a field narrowed by the focus; the caps win where they disagree
    (a clause the implementation cannot be aimed at is given up by the scheduler, not forced)."""
    want = focus.get(key) if focus else None
    narrowed = [o for o in base if want is None or o in want]
    return narrowed or list(base)


@st.composite
def cases(draw, caps: dict, dtypes=None, focus=None, pool=None):
    """A Case within the capabilities `caps` (see adapters/_protocol.py), optionally aimed
    at a focus (a clause's `focus` in the spec) and with its layout taken from a pool (see layout_pool)."""
    focus = focus or {}
    dt_ok = lambda d: (dtypes is None or d in dtypes) and (not focus.get("dtype") or d in focus["dtype"])  # noqa: E731
    if pool:
        kinds = focus.get("shape")
        fitting = [e for e in pool if dt_ok(e[2]) and (not kinds or _shape_kind(e[0], e[1]) in kinds)] or \
            [e for e in pool if dt_ok(e[2])] or list(pool)
        shape, fa, dtype = draw(st.sampled_from(fitting), label="layout")
    else:
        kinds = _options(SHAPE_KINDS, focus, "shape")
        shape, fa = draw(shapes(caps["ranks"], caps["feature_axes"], caps.get("empty_batch", True), kinds=kinds))
        allowed = [d for d in caps["dtypes"] if dt_ok(d)] or [d for d in caps["dtypes"] if dtypes is None or d in dtypes]
        dtype = draw(st.sampled_from(allowed * 3 if len(allowed) == 1 else
                                     [d for d in allowed for _ in range(3 if d == "float32" else 1)]), label="dtype")
    affine_opts = ["random", "random"]
    if caps.get("default_init", True):
        affine_opts.append("default")
    if caps.get("affine_off", True):
        affine_opts.append("off")
    affine = draw(st.sampled_from(_options(affine_opts, focus, "affine")), label="affine")
    mom_opts: list = []
    if caps.get("explicit_momentum", True):
        mom_opts.append("value")
    if caps.get("default_momentum", True):
        mom_opts.append("default")
    if caps.get("momentum_none", False):
        mom_opts.append("none")
    mom_kind = draw(st.sampled_from(_options(mom_opts or ["default"], focus, "momentum")), label="momentum")
    momentum = {"default": DEFAULT, "none": None}.get(mom_kind)
    if mom_kind == "value":
        momentum = draw(st.sampled_from([0.1, 0.01, 0.5, 0.9, 0.99]) | st.floats(0.01, 0.99), label="momentum value")
    eps_opts = ["value"] + (["default"] if caps.get("default_eps", True) else [])
    eps = DEFAULT
    if draw(st.sampled_from(_options(eps_opts, focus, "eps")), label="eps") == "value":
        eps = draw(st.sampled_from(EPS_VALUES) | st.floats(1e-6, 0.1), label="eps value")
    log_scale = draw(st.sampled_from(LOG_SCALES), label="log10 scale")
    kappas = KAPPAS
    if focus.get("kappa"):
        kappas = tuple(k for k in KAPPAS if ("high" if k >= HIGH_KAPPA else "low") in focus["kappa"]) or KAPPAS
    kappa = draw(st.sampled_from(kappas), label="|mean|/std")
    limit = DTYPE_MAX_ABS[dtype]
    if dtype == "float16":
        log_scale = min(max(log_scale, -2.0), 1.0)
    while kappa > 0 and (kappa + 6) * 2 * 10 ** log_scale > limit:
        kappa = KAPPAS[max(KAPPAS.index(kappa) - 1, 0)] if kappa in KAPPAS else 0.0
    special = draw(st.sampled_from(_options(SPECIALS, focus, "special")), label="special")
    track = True
    if caps.get("no_running_stats", False):
        track = draw(st.sampled_from(_options([True, True, True, False], focus, "track")), label="track_running_stats")
    memory_format = "contiguous"
    if caps.get("channels_last_memory") and len(shape) in (4, 5) and fa == 1:
        memory_format = draw(st.sampled_from(["contiguous", "channels_last"]), label="memory format")
    return Case(
        seed=draw(st.integers(0, 2 ** 31 - 1), label="seed"),
        shape=shape, feature_axis=fa, dtype=dtype,
        steps=draw(st.integers(1, 3), label="training steps"),
        affine=affine, momentum=momentum, eps=eps, kappa=float(kappa), log_scale=float(log_scale),
        special=special, special_channel=draw(st.integers(0, 63), label="special channel"),
        track_running_stats=track, memory_format=memory_format,
        grads=bool(caps.get("grads", True)),
    )


def fits(case: Case, caps: dict) -> bool:
    """Whether a pinned case is within an implementation's capabilities."""
    where = "first" if case.feature_axis == 1 else "last"
    if case.feature_axis == case.rank - 1 and "last" in caps["feature_axes"]:
        where = "last"
    return (case.rank in caps["ranks"] and where in caps["feature_axes"] and case.dtype in caps["dtypes"]
            and (case.momentum != DEFAULT or caps.get("default_momentum", True)
                 or not caps.get("explicit_momentum", True))   # no momentum to pass: drawn as default
            and (case.momentum is not None or caps.get("momentum_none", False))
            and (case.eps != DEFAULT or caps.get("default_eps", True))
            and (case.affine != "default" or caps.get("default_init", True))
            and (case.affine != "off" or caps.get("affine_off", True))
            and (case.track_running_stats or caps.get("no_running_stats", False))
            and (case.memory_format == "contiguous" or caps.get("channels_last_memory", False))
            and (case.shape[0] != 0 or caps.get("empty_batch", True)))


# Regressions and the clauses' sharpest probes, pinned so that every run exercises them
# (hypothesis @example). Each is adapted to an implementation's layout by `pinned_for`.
PINNED = [
    # one-pass variance at |mean|/std = 1e4 (google/flax#1491, tensorflow/tensorflow#118701)
    dict(seed=1, shape=(8, 4, 6, 6), dtype="float32", kappa=1e4, eps=1e-5, momentum=0.1),
    # |mean|/std = 100 is where the float32 one-pass variance leaves the model
    dict(seed=2, shape=(16, 3, 4, 4), dtype="float32", kappa=100.0, eps=1e-5, momentum=0.1),
    # n = 2: biased vs unbiased running variance differ by 2x (keras-team/keras#8982)
    dict(seed=3, shape=(2, 5), dtype="float32", kappa=0.0, eps=1e-3, momentum=0.5, steps=2),
    # one value per channel (pytorch/pytorch#4534)
    dict(seed=4, shape=(1, 3, 1, 1), dtype="float32", eps=1e-5, momentum=0.1),
    # variance comparable to eps: eps placement shows (keras-team/keras#8726)
    dict(seed=5, shape=(4, 3, 5, 5), dtype="float32", log_scale=-3.0, eps=1e-5, momentum=0.1),
    # framework defaults for eps and momentum, and default initialisation
    dict(seed=6, shape=(4, 6, 3, 3), dtype="float32", eps=DEFAULT, momentum=DEFAULT, affine="default", steps=3),
    # float16 statistics (chainer/chainer#6323) and float64 end to end
    dict(seed=7, shape=(8, 4, 8, 8), dtype="float16", kappa=10.0, eps=1e-3, momentum=0.1),
    dict(seed=8, shape=(8, 4, 4, 4), dtype="float64", kappa=3.0, eps=1e-5, momentum=0.1),
]


def pinned_for(caps: dict) -> list[Case]:
    out = []
    for p in PINNED:
        p = dict(p)
        shape = p.pop("shape")
        for rank_shape in (shape, shape[:2] + shape[2:3] if len(shape) > 2 else shape):
            if len(rank_shape) not in caps["ranks"]:
                continue
            for where in caps["feature_axes"]:
                fa = _feature_axis(len(rank_shape), where)
                s = list(rank_shape)
                if fa != 1:  # move the channel count to the last axis
                    s[1], s[fa] = s[fa], s[1]
                c = Case(shape=tuple(s), feature_axis=fa, **p)
                c = c.replace(grads=bool(caps.get("grads", True)))
                if fits(c, caps):
                    out.append(c)
                    break
            else:
                continue
            break
    return out


# ----------------------------------------------------------------- cross-replica cases
@st.composite
def sync_cases(draw, caps: dict, focus=None, pool=None):
    """A SyncCase within `caps`: 2..8 replicas, even and uneven splits (ragged arrays where
    the engine takes them, padding plus a mask where it needs equal shapes), one replica
    with no real rows where the engine allows it. focus: a clause's `focus` (split). pool: frames from
    sync_layout_pool (per-device shapes fixed, the real rows per replica still drawn)."""
    from bnconf.cases.sync_case import SyncCase
    low = 0 if caps.get("empty_replica") else 1
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
        lo, hi = caps["replicas"]
        R = draw(st.integers(lo, hi), label="replicas")
        uneven_ok = caps.get("ragged") or caps.get("mask")
        split = draw(st.sampled_from(_options(["even", "uneven"] if uneven_ok else ["even"], focus, "split")),
                     label="split")
        if split == "even":
            n = draw(st.integers(1, 6), label="rows per replica")
            counts = [n] * R
        else:
            counts = [draw(st.integers(low, 8), label=f"rows of replica {r}") for r in range(R)]
            if len(set(counts)) == 1:
                counts[0] = counts[0] + 1 if counts[0] < 8 else counts[0] - 1
        masked = False
        if caps.get("mask") and (split == "uneven" and not caps.get("ragged")):
            masked = True
        elif caps.get("mask"):
            masked = draw(st.booleans(), label="masked")
        if masked:
            width = max(counts) + draw(st.integers(0, 2), label="padding rows")
            rows = [width] * R
        else:
            rows = list(counts)
        rank = draw(st.sampled_from(sorted(caps["ranks"])), label="rank")
        where = draw(st.sampled_from(sorted(caps["feature_axes"])), label="feature axis")
        C = draw(st.sampled_from([1, 2, 3, 4, 8]), label="channels")
        spatial = [draw(st.integers(1, 4), label=f"spatial {i}") for i in range(rank - 2)]
        inner = [C] + spatial if where == "first" else spatial + [C]
        fa = 1 if where == "first" else rank - 1
        if sum(counts) * int(np.prod(spatial or [1])) < 2:      # at least two values per channel
            counts[0] += 1
            rows[0] = max(rows[0], counts[0])
            if masked:
                rows = [max(rows)] * R
        dtype = draw(st.sampled_from(sorted(caps["dtypes"])), label="dtype")
    affine = draw(st.sampled_from(["random", "random", "default"] if caps.get("default_init", True) else ["random"]),
                  label="affine")
    kappa = draw(st.sampled_from(KAPPAS[:7]), label="|mean|/std")
    return SyncCase(
        seed=draw(st.integers(0, 2 ** 31 - 1), label="seed"), counts=tuple(counts), rows=tuple(rows),
        inner=tuple(inner), feature_axis=fa, dtype=dtype,
        momentum=draw(st.sampled_from([0.1, 0.5, 0.9, 0.99]) | st.floats(0.01, 0.99), label="momentum"),
        eps=draw(st.sampled_from(EPS_VALUES), label="eps"), kappa=float(kappa),
        log_scale=float(draw(st.sampled_from([-1.0, 0.0, 0.0, 1.0]), label="log10 scale")),
        affine=affine, masked=masked)


def sync_layout_pool(caps: dict, seed: int, per_dtype: int) -> list[tuple]:
    """Frames (replicas, rows per replica, inner shape, feature axis, dtype, masked) for
    engines that compile per per-device shape and take a mask: unmasked frames give even
    splits, masked ones uneven splits (the real rows drawn per case, the shapes fixed)."""
    rng = np.random.default_rng([seed, 0x5B])
    pick = lambda opts: opts[int(rng.integers(len(opts)))]  # noqa: E731
    lo, hi = caps["replicas"]
    out = []
    for dtype in caps["dtypes"]:
        for masked in ([False, True] if caps.get("mask") else [False]):
            for _ in range(per_dtype):
                rank, where = pick(sorted(caps["ranks"])), pick(sorted(caps["feature_axes"]))
                C = pick([1, 2, 3, 4, 8])
                spatial = [pick([1, 2, 3, 4]) for _ in range(rank - 2)]
                inner = tuple([C] + spatial if where == "first" else spatial + [C])
                width = pick(list(range(2, 9)) if masked else list(range(1, 7)))
                out.append((pick(list(range(lo, hi + 1))), width, inner, 1 if where == "first" else rank - 1,
                            dtype, masked))
    return out


def sync_case_traits(case) -> dict:
    return {"split": "uneven" if len(set(case.counts)) > 1 else "even", "dtype": case.dtype}


# Pinned cross-replica probes (hypothesis @example), adapted by `sync_pinned_for`.
SYNC_PINNED = [
    # even split, 8 replicas: the global batch is 8x each replica's
    dict(seed=11, counts=(2,) * 8, inner=(3,), kappa=1.0),
    # very uneven split: unweighted averaging of replica statistics is far off here
    # (pytorch/pytorch#22192; flax's pmean of masked means)
    dict(seed=12, counts=(1, 7, 2), inner=(2, 2, 4), kappa=3.0),
    # one-pass variance over the global batch at |mean|/std = 100
    dict(seed=13, counts=(4, 4), inner=(4, 4, 3), kappa=100.0),
]


def sync_pinned_for(caps: dict) -> list:
    from bnconf.cases.sync_case import SyncCase
    out = []
    for p in SYNC_PINNED:
        counts = tuple(p["counts"])
        R = len(counts)
        lo, hi = caps["replicas"]
        if not lo <= R <= hi:
            continue
        uneven = len(set(counts)) > 1
        if uneven and not (caps.get("ragged") or caps.get("mask")):
            continue
        inner = tuple(p["inner"])
        rank = 1 + len(inner)
        if rank not in caps["ranks"]:
            inner = inner[-1:] if 2 in caps["ranks"] else (1, 1, inner[-1])
            rank = 1 + len(inner)
        where = "last" if "last" in caps["feature_axes"] else "first"
        if where == "first":
            inner = inner[-1:] + inner[:-1]
        masked = bool(uneven and not caps.get("ragged"))
        rows = (max(counts),) * R if masked else counts
        out.append(SyncCase(seed=p["seed"], counts=counts, rows=rows, inner=inner,
                            feature_axis=1 if where == "first" else rank - 1, dtype=sorted(caps["dtypes"])[-1]
                            if "float32" not in caps["dtypes"] else "float32", momentum=0.1, eps=1e-5,
                            kappa=p["kappa"], masked=masked))
    return out

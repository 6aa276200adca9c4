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

from bnconf.adapters._protocol import Capabilities
from bnconf.cases.case import DEFAULT, Case
from bnconf.cases.focus import HIGH_KAPPA, shape_kind
from bnconf.cases.layouts import LAYOUTS, admits

KAPPAS = (0.0, 0.5, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 1e4)
LOG_SCALES = (-3.0, -1.0, 0.0, 0.0, 1.0, 3.0)
EPS_VALUES = (1e-5, 1e-3, 1e-2, 0.1, 1e-4)
# Largest |x| we let a dtype hold, so the mean plus a few std never overflows it.
DTYPE_MAX_ABS = {"float16": 2e3, "bfloat16": 1e30, "float32": 1e30, "float64": 1e300}
MAX_ELEMENTS = 4096


def feature_axis(rank: int, where: str) -> int:
    return 1 if where == "first" else rank - 1


SHAPE_KINDS = ("normal",) * 8 + ("one_value", "empty")
CHANNELS = (1, 2, 3, 4, 5, 8, 16, 64)
SPECIALS = ("none",) * 9 + ("constant", "nan", "inf")


def make_shape(pick, ranks, feature_axes, kind, max_elements=MAX_ELEMENTS, layouts=()):
    """(shape, feature_axis) from `pick(options, label)`: batch first, feature axis first or
    last, small and large channels, the degenerate n = 1 per channel and the empty batch.
    One definition for both a hypothesis draw and a layout pool's NumPy draw. A declared
    scope (`layouts`, names from cases/layouts.py) is drawn from by name; without one the
    draw is rank then axis, as every seed's cases were made before scopes existed."""
    if layouts:
        rank, where = LAYOUTS[pick(tuple(n for n in LAYOUTS if n in layouts), "layout")]
    else:
        rank = pick(sorted(ranks), "rank")
        where = pick(sorted(feature_axes), "feature axis")
    fa = feature_axis(rank, where)
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
def shapes(draw, ranks, feature_axes, empty_batch=True, max_elements=MAX_ELEMENTS, kinds=None, layouts=()):
    kinds = [k for k in (kinds or SHAPE_KINDS) if empty_batch or k != "empty"] or ["normal"]
    kind = draw(st.sampled_from(kinds), label="shape kind")
    return make_shape(lambda opts, label: draw(st.sampled_from(opts), label=label), ranks, feature_axes, kind,
                      max_elements, layouts)


def layout_pool(caps: Capabilities, seed: int, per_dtype: int, first=()) -> list[tuple]:
    """A run's finite set of (shape, feature_axis, dtype) layouts, drawn from the seed, for
    implementations that compile a program per input shape (XLA, graph modes): every case of
    the run takes its layout from here, so compiled programs are reused and the time goes
    to cases, not to the compiler. Each dtype gets `per_dtype` ordinary layouts (float32
    twice as many), one with a single value per channel and one empty batch, so every
    focus (spec/batchnorm.yaml) can be met. A different seed gives a different pool. `first`:
    layouts already compiled (a user audit's scope probes), in the pool besides those drawn."""
    rng = np.random.default_rng([seed, 0xB0])
    pick = lambda opts, label: opts[int(rng.integers(len(opts)))]  # noqa: E731
    out = []
    for dtype in caps.dtypes:
        kinds = ["normal"] * (per_dtype * (2 if dtype == "float32" else 1)) + ["one_value"]
        if caps.empty_batch:
            kinds.append("empty")
        for kind in kinds:
            shape, fa = make_shape(pick, caps.ranks, caps.feature_axes, kind, layouts=caps.layouts)
            out.append((shape, fa, dtype))
    return [tuple(e) for e in first if e[2] in caps.dtypes and tuple(e) not in out] + out


def options(base, focus, key):
    """The caps' options for a field narrowed by the focus; the caps win where they disagree
    (a clause the implementation cannot be aimed at is given up by the scheduler, not forced)."""
    want = focus.get(key) if focus else None
    narrowed = [o for o in base if want is None or o in want]
    return narrowed or list(base)


@st.composite
def cases(draw, caps: Capabilities, dtypes=None, focus=None, pool=None):
    """A Case within the capabilities `caps` (see adapters/_protocol.py), optionally aimed
    at a focus (a clause's `focus` in the spec) and with its layout taken from a pool (see layout_pool)."""
    focus = focus or {}
    dt_ok = lambda d: (dtypes is None or d in dtypes) and (not focus.get("dtype") or d in focus["dtype"])  # noqa: E731
    if pool:
        kinds = focus.get("shape")
        fitting = [e for e in pool if dt_ok(e[2]) and (not kinds or shape_kind(e[0], e[1]) in kinds)] or \
            [e for e in pool if dt_ok(e[2])] or list(pool)
        shape, fa, dtype = draw(st.sampled_from(fitting), label="layout")
    else:
        kinds = options(SHAPE_KINDS, focus, "shape")
        shape, fa = draw(shapes(caps.ranks, caps.feature_axes, caps.empty_batch, kinds=kinds, layouts=caps.layouts))
        allowed = [d for d in caps.dtypes if dt_ok(d)] or [d for d in caps.dtypes if dtypes is None or d in dtypes]
        dtype = draw(st.sampled_from(allowed * 3 if len(allowed) == 1 else
                                     [d for d in allowed for _ in range(3 if d == "float32" else 1)]), label="dtype")
    affine_opts = ["random", "random"]
    if caps.default_init:
        affine_opts.append("default")
    if caps.affine_off:
        affine_opts.append("off")
    affine = draw(st.sampled_from(options(affine_opts, focus, "affine")), label="affine")
    mom_opts: list = []
    if caps.explicit_momentum:
        mom_opts.append("value")
    if caps.default_momentum:
        mom_opts.append("default")
    if caps.momentum_none:
        mom_opts.append("none")
    mom_kind = draw(st.sampled_from(options(mom_opts or ["default"], focus, "momentum")), label="momentum")
    momentum = {"default": DEFAULT, "none": None}.get(mom_kind)
    if mom_kind == "value":
        momentum = draw(st.sampled_from([0.1, 0.01, 0.5, 0.9, 0.99]) | st.floats(0.01, 0.99), label="momentum value")
    eps_opts = ["value"] + (["default"] if caps.default_eps else [])
    eps = DEFAULT
    if draw(st.sampled_from(options(eps_opts, focus, "eps")), label="eps") == "value":
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
    special = draw(st.sampled_from(options(SPECIALS, focus, "special")), label="special")
    track = True
    if caps.no_running_stats:
        track = draw(st.sampled_from(options([True, True, True, False], focus, "track")), label="track_running_stats")
    memory_format = "contiguous"
    if caps.channels_last_memory and len(shape) in (4, 5) and fa == 1:
        memory_format = draw(st.sampled_from(["contiguous", "channels_last"]), label="memory format")
    return Case(
        seed=draw(st.integers(0, 2 ** 31 - 1), label="seed"),
        shape=shape, feature_axis=fa, dtype=dtype,
        steps=draw(st.integers(1, 3), label="training steps"),
        affine=affine, momentum=momentum, eps=eps, kappa=float(kappa), log_scale=float(log_scale),
        special=special, special_channel=draw(st.integers(0, 63), label="special channel"),
        track_running_stats=track, memory_format=memory_format,
        grads=bool(caps.grads),
    )


def fits(case: Case, caps: Capabilities) -> bool:
    """Whether a pinned case is within an implementation's capabilities."""
    where = "first" if case.feature_axis == 1 else "last"
    if case.feature_axis == case.rank - 1 and "last" in caps.feature_axes:
        where = "last"
    in_layout = admits(caps, case.rank, case.feature_axis) if caps.layouts else (
        case.rank in caps.ranks and where in caps.feature_axes)
    return (in_layout and case.dtype in caps.dtypes
            and (case.momentum != DEFAULT or caps.default_momentum
                 or not caps.explicit_momentum)   # no momentum to pass: drawn as default
            and (case.momentum is not None or caps.momentum_none)
            and (case.eps != DEFAULT or caps.default_eps)
            and (case.affine != "default" or caps.default_init)
            and (case.affine != "off" or caps.affine_off)
            and (case.track_running_stats or caps.no_running_stats)
            and (case.memory_format == "contiguous" or caps.channels_last_memory)
            and (case.shape[0] != 0 or caps.empty_batch))

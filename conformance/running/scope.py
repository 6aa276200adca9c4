"""What a hand-written BN covers, found before its audit: each candidate layout, and then each
configuration beyond the plainest (another dtype, no running statistics, no gamma/beta, a
cumulative average), is run once as a training step and an eval call. A NotImplementedError
from the user's code means "outside my scope": that configuration leaves the capabilities the
cases are drawn from, so no case of it is judged or shown as a failing example, and the report
lists it. A declared layout (--layouts) is never taken out: refusing it is judged like any other
failure. Any other exception keeps the configuration in scope (it is a failure to report), and
the Scope section says how to declare it out.
"""
from __future__ import annotations

import dataclasses

from bnconf.cases import layouts as lay
from bnconf.cases.case import DEFAULT, Case, materialize
from bnconf.cases.strategies import feature_axis, fits
from bnconf.running.audit import build_params
from bnconf.running.trace import run_trace

REFUSAL = "NotImplementedError"
PROBE_SEED = 20


@dataclasses.dataclass
class Scope:
    declared: bool
    layouts: tuple                                  # the layouts audited
    dtypes: tuple
    out_of_scope: list = dataclasses.field(default_factory=list)   # {what, message}
    notes: list = dataclasses.field(default_factory=list)          # configurations kept in scope that raised
    # (case, outcomes) of each probe that raised in a configuration kept in scope: judged like
    # any case (a crash or hang met while finding the scope is a finding, not lost)
    judged: list = dataclasses.field(default_factory=list)
    # (shape, feature_axis, dtype) the probes ran in scope: a layout pool starts with them, so a
    # JIT framework's programs compiled for the probes serve the audit's cases too
    probed: list = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        how = "declared" if self.declared else "found"
        return f"layouts {', '.join(self.layouts)} ({how}); dtypes {', '.join(self.dtypes)}"

    def to_json(self) -> dict:
        return {"declared": self.declared, "layouts": list(self.layouts), "dtypes": list(self.dtypes),
                "out_of_scope": self.out_of_scope, "notes": self.notes}


# configuration -> (how to say it, the capabilities change that takes it out, the case change that shows it)
CONFIGURATIONS = {
    "no_running_stats": ("no running statistics (track_running_stats=False: batch statistics in eval too)",
                         {"no_running_stats": False}, {"track_running_stats": False}),
    "affine_off": ("no gamma/beta (affine=False)", {"affine_off": False}, {"affine": "off"}),
    "momentum_none": ("a cumulative average (momentum=None)", {"momentum_none": False}, {"momentum": None}),
}


def _plain_cases(caps, name: str, dtype: str = "float32", **change) -> list[Case]:
    """The plainest cases in a layout: 4 rows, 3 features, 2 per spatial axis, affine, running
    statistics; explicit momentum and eps first, the implementation's defaults after."""
    shape, fa = _plain_layout(name)
    out = []
    for momentum in (0.1, DEFAULT):
        for eps in (1e-5, DEFAULT):
            case = Case(seed=PROBE_SEED, shape=tuple(shape), feature_axis=fa, dtype=dtype, steps=1,
                        momentum=momentum, eps=eps, grads=bool(caps.grads)).replace(**change)
            if fits(case, caps):
                out.append(case)
    return out


def _plain_layout(name: str) -> tuple:
    """4 rows, 3 features, 2 per spatial axis, in the named layout: (shape, feature_axis)."""
    rank, where = lay.LAYOUTS[name]
    fa = feature_axis(rank, where)
    shape = [4] + [2] * (rank - 1)
    shape[fa] = 3
    return tuple(shape), fa


def _trace_only(impl, case):
    arrays = materialize(case)
    return run_trace(impl, build_params(case, arrays), arrays, 1, "cpu", grads=case.grads), None


def _refusal(impl, cases, judge) -> tuple | None:
    """(exception type, message, phase, case, outcomes) of the first call that raised on the
    first of `cases` the implementation takes (an adapter answers Unsupported to momentum or eps
    it keeps itself), or None. judge(case) -> (trace, outcomes or None)."""
    for case in cases:
        out, outcomes = judge(case)
        err = out.get("error")
        if err and err["unsupported"]:
            continue
        if not err:
            return None
        first = err["message"].splitlines()[0][:200] if err["message"] else ""
        return (err["type"], f"{err['type']}: {first}" + (" (in eval)" if err["phase"] == "eval" else ""),
                err["phase"], case, outcomes)
    return None


def find_scope(impl, declared: tuple | None = None, judge=None) -> tuple[object, Scope]:
    """(capabilities narrowed to the scope, the Scope). declared: layout names the user
    declared; None: every candidate the implementation's capabilities admit. judge(case) ->
    (trace, outcomes): the audit's own judgement of a probe (default: the trace alone)."""
    judge = judge or (lambda case: _trace_only(impl, case))
    caps = impl.capabilities

    def kept_raising(raised):
        if raised and raised[4] is not None:
            scope.judged.append((raised[3], raised[4]))
    candidates = tuple(declared) if declared else lay.allowed(caps)
    scope = Scope(bool(declared), (), ())
    kept, working = [], []
    for name in candidates:
        raised = _refusal(impl, _plain_cases(dataclasses.replace(caps, **lay.narrowed(caps, (name,))), name), judge)
        # refusing eval alone is not refusing the layout: BN-EVAL-RUNNING and BN-EVAL-BATCH judge it
        if raised and raised[0] == REFUSAL and raised[2] != "eval" and not declared:
            scope.out_of_scope.append({"what": f"layout {name}", "message": raised[1]})
            continue
        if raised:
            kept_raising(raised)
            scope.notes.append({"what": f"layout {name}", "message": raised[1],
                                "hint": "declared with --layouts, so judged" if declared else
                                "judged: if the code is not meant to support it, leave it out of --layouts "
                                "or raise NotImplementedError for it"})
        else:
            working.append(name)
        kept.append(name)
    if not kept:
        scope.layouts, scope.dtypes = (), ()
        return None, scope
    caps = dataclasses.replace(caps, **lay.narrowed(caps, kept))
    scope.layouts, scope.dtypes = tuple(kept), caps.dtypes
    if not working:   # no layout runs plainly: a refusal elsewhere would say nothing of its own
        return caps, scope
    first = working[0]
    dtypes = ["float32"] if "float32" in caps.dtypes else list(caps.dtypes[:1])
    for dt in caps.dtypes:
        if dt in dtypes:
            continue
        raised = _refusal(impl, _plain_cases(caps, first, dt), judge)
        if raised and raised[0] == REFUSAL:
            scope.out_of_scope.append({"what": f"dtype {dt}", "message": raised[1]})
        else:
            kept_raising(raised)
            dtypes.append(dt)
    caps = dataclasses.replace(caps, dtypes=tuple(d for d in caps.dtypes if d in dtypes))
    scope.probed = [(*_plain_layout(n), dtypes[0]) for n in kept] + [(*_plain_layout(first), d) for d in dtypes[1:]]
    for key, (what, off, change) in CONFIGURATIONS.items():
        if not getattr(caps, key):
            continue
        raised = _refusal(impl, _plain_cases(caps, first, **change), judge)
        if raised and raised[0] == REFUSAL:
            scope.out_of_scope.append({"what": what, "message": raised[1]})
            caps = dataclasses.replace(caps, **off)
        else:
            kept_raising(raised)
    scope.layouts, scope.dtypes = tuple(kept), caps.dtypes
    return caps, scope

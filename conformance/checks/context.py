"""What a check judges from and what it returns: the case with the implementation's answer
(single-device Ctx, cross-replica SyncCtx) and one Outcome per clause."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from bnconf.cases.case import Case
from bnconf.cases.sync_case import SyncCase
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import Comparison

# a number standing alone (not the 16 of float16): blanked in a deviation's kind
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@dataclass
class Outcome:
    clause: str
    ok: bool
    comparison: Comparison | None = None
    note: str = ""
    measured: dict = field(default_factory=dict)
    error: str | None = None    # bnconf's own failure (a check crashed): the traceback; never the implementation's
    raised: str | None = None   # the implementation's exception, "Type: message", where raising is the failure
                                # (blocking.py: one exception seen by several clauses is one finding)

    @property
    def kind(self) -> str:
        """What kind of deviation this is, stable across cases: the measured convention or
        cause, else the note with its numbers blanked, else the quantity that deviated. A
        known deviation names the kind it expects (adapters/known), so a new bug under a
        listed clause is not waived."""
        if self.measured:
            return ", ".join(f"{k}={v}" for k, v in sorted(self.measured.items()))
        if self.note:
            return _NUMBER.sub("#", self.note)[:160]
        key = self.comparison.key if self.comparison is not None else ""
        return "deviation in " + (re.sub(r"\d+", "#", key) or "the output")


@dataclass
class CaseContext:
    """What single-device and cross-replica checks derive alike from the case: the error model
    of its dtype, the feature axis, gamma and beta, the |mean|/std above which a case is
    ill-conditioned. A subclass declares the implementation's answer, `profile` and `spec`
    after these two fields (the engines construct contexts positionally)."""
    case: Case | SyncCase
    arrays: dict

    def __post_init__(self):
        self.model = tolerance.model_for(self.spec.tolerance, self.case.dtype)
        self.fa = self.case.feature_axis
        self.weight = self.arrays.get("weight")
        self.bias = self.arrays.get("bias")
        self.kappa_thr = float(self.spec.tolerance["ill_conditioned_kappa"])


@dataclass
class Ctx(CaseContext):
    """A single-device case: `trace` is what the engine recorded of the implementation's calls
    (running/trace.py), `applicable` the clauses the profile has."""
    trace: dict
    profile: object
    spec: object
    applicable: set

    def __post_init__(self):
        super().__post_init__()
        p = self.profile
        self.eps = (p.default_eps if self.case.eps == "default" else float(self.case.eps)) * p.eps_scale
        self.momentum = p.default_momentum if self.case.momentum == "default" else self.case.momentum
        if self.case.affine == "default" and "init/weight" in self.trace:
            # the layer's own initial gamma and beta, read from it: a wrong initialisation is
            # BN-INIT's finding alone, and every other clause is judged with the values it has
            self.weight = np.asarray(self.trace["init/weight"], np.float64)
            self.bias = np.asarray(self.trace["init/bias"], np.float64)
        # The profile with the conventions this case measured: downstream checks judge their
        # own clause under it, so one convention deviation is one finding, not a cascade.
        self.eff = self.profile
        self.rerun = None  # set by the engine: evaluate a variant of the case (no nested attribution)
        self.relations = {}  # set by the engine: name -> (x, overrides) of the relation calls it made

    def standard_forward(self):
        """Whether the measured forward conventions are the spec's (oracle gradients,
        invariance relations and folding assume them)."""
        return (self.eff.eps_placement == "inside_sqrt" and self.eff.normalize_variance == "biased"
                and self.eff.reduction == "all_but_feature_axis")

    def clause_for(self, conv_field):
        c = self.spec.clause_for_convention(self.profile, conv_field)
        return c.id if c else None

    def u_out(self, dtype_name):
        try:
            return tolerance.unit_roundoff(dtype_name)
        except ValueError:
            return tolerance.unit_roundoff("float16")

    def mask_special(self, constant=False):
        """Boolean per channel: False for the channel holding NaN/Inf (BN-NONFINITE-CONFINED), and
        with `constant` for a constant channel too (where a wrong eps placement amplifies the
        implementation's own rounding, which no oracle variant reproduces)."""
        keep = np.ones(self.case.num_features, bool)
        if self.case.special in ("nan", "inf") or (constant and self.case.special == "constant"):
            keep[self.case.special_channel % self.case.num_features] = False
        return keep

    def channel_mask(self, shape, constant=False):
        keep = self.mask_special(constant)
        s = [1] * len(shape)
        s[self.fa] = -1
        return np.broadcast_to(keep.reshape(s), shape)


@dataclass
class SyncCtx(CaseContext):
    """A data-parallel step: `result` is the adapter's answer (adapters/_protocol.py,
    SyncImplementation), `caps` the wrapper's capabilities."""
    result: dict
    profile: object
    spec: object
    caps: object          # SyncCapabilities (adapters/_protocol.py)
    rerun: object = None  # SyncCase -> outcomes (differential re-run; None when nested)

    def __post_init__(self):
        super().__post_init__()
        self.eps = float(self.case.eps)
        self.u_out = tolerance.unit_roundoff(self.result.get("y_dtype") or self.case.dtype)
        self.synchronized = bool(self.caps.synchronized)
        # each replica's real rows in float64 (what every reference is computed from)
        self.xs = [np.asarray(x, np.float64)[real] for x, real in zip(self.arrays["x"], self.arrays["real"])]

    @property
    def forward_clause(self) -> str:
        if not self.synchronized:
            return "BN-SYNC-LOCAL"
        return "BN-SYNC-GLOBAL" if self.case.even else "BN-SYNC-WEIGHTED"

    def real_rows(self, key: str):
        """The adapter's per-replica `key` output restricted to the real rows, concatenated."""
        parts = []
        for rep, real in zip(self.result["replicas"], self.arrays["real"]):
            a = rep.get(key)
            if a is None:
                return None
            a = np.asarray(a, np.float64)
            if a.shape[:1] != real.shape:
                return a  # shape mismatch: compare() reports it
            parts.append(a[real])
        return np.concatenate(parts, axis=0)


def _worst(cmps):
    cmps = [c for c in cmps if c is not None]
    if not cmps:
        return None
    return max(cmps, key=lambda c: (not c.ok, c.ratio if np.isfinite(c.ratio) else 1e300))


def _failed_call(ctx, clause):
    """The call raised on a valid input: the implementation's failure under the clause judged."""
    err = ctx.trace.get("error")
    return Outcome(clause, False, note=f"{err['type']} in {err['phase']}: {err['message']}", raised=raised_text(err))


def raised_text(err) -> str:
    """An exception the implementation raised, as blocking.py compares it across clauses."""
    return f"{err['type']}: {err['message'][:200]}"


def _masked(a, mask):
    a = np.array(a, np.float64, copy=True)
    a[~mask] = 0.0
    return a


def _trainable_case(ctx):
    """A batch variance to normalize by: more than one value per channel, a non-empty batch."""
    return ctx.case.n_per_channel > 1 and ctx.case.shape[0] > 0


def _placement(ctx, profile) -> str:
    """The eps placement whose error model bounds a comparison: the profile's in float32/float64;
    in a low precision the spec's, so that a wider bound never makes a rounding error "match"."""
    return profile.eps_placement if ctx.case.dtype in ("float32", "float64") else "inside_sqrt"


def _stats_before_eval(ctx):
    """The running statistics the last training step reported: what eval normalizes with."""
    k = ctx.case.steps - 1
    return ctx.trace.get(f"train_{k}/running_mean"), ctx.trace.get(f"train_{k}/running_var")


def _eval_tracked(ctx):
    """Eval normalizes with running statistics (else with batch statistics: BN-EVAL-BATCH)."""
    return ctx.case.track_running_stats and ctx.profile.momentum_form != "none"


def eval_expected(ctx, x, rm, rv, u):
    """(oracle eval output, its error-model bound) of x normalized with the running statistics
    (rm, rv), under the conventions the earlier checks measured (ctx.eff): the relation checks
    that need it (BN-MODE-SWITCH, BN-STATE-PERSIST) must not make another clause's eps finding
    their own evidence."""
    m, v = oracle._per_feature(rm, x.ndim, ctx.fa), oracle._per_feature(rv, x.ndim, ctx.fa)
    y = oracle.normalize(x, m, v, ctx.eps, ctx.weight, ctx.bias, ctx.fa, ctx.eff.eps_placement)
    return y, tolerance.y_eval_bound(ctx.model, x, ctx.weight, ctx.bias, rm, rv, ctx.eps, ctx.fa, u, y,
                                     _placement(ctx, ctx.eff))


def probe_raised(trace, probe, clause, what):
    """A probe's recorded error as its clause's outcome: None where the probe did not raise,
    [] where the implementation said the configuration is outside it (Unsupported), else a
    failure naming the call."""
    e = trace.get(probe + "/error")
    if e is None:
        return None
    return [] if e["unsupported"] else [Outcome(clause, False, note=f"{what} raised {e['type']}: {e['message'][:300]}",
                                                raised=raised_text(e))]

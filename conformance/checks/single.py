"""Clause checks: one trace of one case in, one outcome per clause out.

Each check compares one quantity of the trace with the oracle under the implementation's
profile, using the tolerance model. When a quantity deviates, the deviation is attributed:
if flipping exactly one convention field of the profile makes the oracle match, the
failure belongs to the clause that pins that field (and the measured convention is
recorded: that is also how fingerprints are measured). Otherwise it belongs to the
quantity's own clause. Checks never raise on bad implementation output.
"""
from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from bnconf.reference import oracle

from bnconf.reference import error_model as tolerance
from bnconf.cases.case import Case, cast, centred
from bnconf.reference.comparison import Comparison, compare

# Alternatives tried when a quantity deviates (attribution), per convention field.
FLIPS = {
    "eps_placement": ["outside_sqrt", "minus_inside_sqrt", "absent", "inside_sqrt"],
    "normalize_variance": ["unbiased", "biased"],
    "reduction": ["batch_axis_only", "all_but_feature_axis"],
    "running_variance": ["biased", "unbiased", "std"],
    "momentum_form": ["batch_weight", "old_weight"],
}
# a number standing alone (not the 16 of float16): blanked in a deviation's kind
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
EPS_CANDIDATES = (1e-5, 1e-3, 2e-5, 1e-6, 1e-4, 1e-12, 0.0)
EPS_FACTORS = (2.0, 0.5, 10.0, 0.1)   # eps added twice, halved, or off by a power of ten
MOMENTUM_CANDIDATES = (0.1, 0.9, 0.99, 0.01, 0.999, 0.001, 1.0, 0.0)


@dataclass
class Outcome:
    clause: str
    ok: bool
    comparison: Comparison | None = None
    note: str = ""
    measured: dict = field(default_factory=dict)
    error: str | None = None    # bnconf's own failure (a check crashed): the traceback; never the implementation's

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
class Ctx:
    case: Case
    arrays: dict
    trace: dict
    profile: object
    spec: object
    applicable: set

    def __post_init__(self):
        self.model = tolerance.model_for(self.spec.tolerance, self.case.dtype)
        self.fa = self.case.feature_axis
        p = self.profile
        self.eps = (p.default_eps if self.case.eps == "default" else float(self.case.eps)) * p.eps_scale
        self.momentum = p.default_momentum if self.case.momentum == "default" else self.case.momentum
        self.weight = self.arrays.get("weight")
        self.bias = self.arrays.get("bias")
        self.kappa_thr = float(self.spec.tolerance["ill_conditioned_kappa"])
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


CHECKS: dict[str, Callable] = {}
EMITS: dict[str, tuple[str, ...]] = {}
# what numeric_attribution can name instead of the check's own clause (float32(eps) is an eps
# placement finding); every check that calls it declares them (lint_emissions holds it to that)
NUMERIC = ("BN-DTYPE-F64", "BN-DTYPE-ACCUM", "BN-VAR-STABLE", "BN-EPS-INSIDE")


def check(*names, emits=()):
    def deco(fn):
        for n in names:
            CHECKS[n] = fn
        EMITS[fn.__name__] = tuple(emits)
        return fn
    return deco


def _worst(cmps):
    cmps = [c for c in cmps if c is not None]
    if not cmps:
        return None
    return max(cmps, key=lambda c: (not c.ok, c.ratio if np.isfinite(c.ratio) else 1e300))


def _failed_call(ctx, clause):
    err = ctx.trace.get("error")
    return Outcome(clause, False, note=f"{err['type']} in {err['phase']}: {err['message']}")


def _relation_raised(ctx, clause, names):
    """A relation or post-eval call the implementation raised on is its failure on a valid
    input, judged under the clause that made the call (not a silent 'not run')."""
    for name in names:
        err = ctx.trace.get(f"extra/{name}/error")
        if err is None and str((ctx.trace.get("error") or {}).get("phase", "")).startswith(f"post/{name}"):
            err = ctx.trace["error"]
        if err is not None and not err["unsupported"]:
            return Outcome(clause, False, note=f"{err['type']} on the {name} input ({err['phase']}): "
                                               f"{err['message'][:300]}")
    return None


def _masked(a, mask):
    a = np.array(a, np.float64, copy=True)
    a[~mask] = 0.0
    return a


# ---------------------------------------------------------------- training output
def _y_train_cmp(ctx, profile, model, eps, skip_constant=False):
    cmps = []
    for k in range(ctx.case.steps):
        key = f"train_{k}/y"
        if key not in ctx.trace:
            return None
        x = ctx.arrays[f"x_train_{k}"]
        y_exp = oracle.train_forward(x, ctx.weight, ctx.bias, eps, ctx.fa, profile)[0]
        mask = ctx.channel_mask(x.shape, skip_constant)
        y_act = ctx.trace[key]
        if np.shape(y_act) != x.shape:
            return compare(y_act, y_exp, 0.0, key=key)
        bound = tolerance.y_train_bound(model, np.where(mask, x, 0), ctx.weight, ctx.bias, eps, ctx.fa,
                                        ctx.u_out(ctx.trace[f"train_{k}/y_dtype"]), _masked(y_exp, mask),
                                        _placement(ctx, profile), profile.reduction)
        cmps.append(compare(_masked(y_act, mask), _masked(y_exp, mask), np.where(mask, bound, np.inf),
                            note=f"training step {k}", key=key))
    return _worst(cmps)


def _trainable_case(ctx):
    return ctx.case.n_per_channel > 1 and ctx.case.shape[0] > 0


@check("y_train", "y_train_affine_off", "y_train_low_precision", "y_train_f64", "y_train_ill_conditioned",
       "default_eps", "constant_channel", "nonfinite_confined",
       emits=("BN-NORMALIZE", "BN-VAR-BIASED", "BN-EPS-INSIDE", "BN-AFFINE", "BN-AFFINE-OFF", "BN-DTYPE-ACCUM",
              "BN-DTYPE-F64", "BN-VAR-STABLE", "BN-DEFAULT-EPS", "BN-CONSTANT-CHANNEL", "BN-NONFINITE-CONFINED",
              "BN-AXES"))
def y_train(ctx: Ctx):
    if not _trainable_case(ctx):
        return []
    if "error" in ctx.trace and ctx.trace["error"]["phase"].startswith(("build", "train")):
        if ctx.trace["error"]["unsupported"]:
            return []
        if ctx.case.affine == "off" and ctx.rerun is not None \
                and _passes(ctx, ctx.case.replace(affine="random"), "BN-NORMALIZE"):
            out = _failed_call(ctx, "BN-AFFINE-OFF")   # raises only without gamma and beta
            out.measured = {"affine_off": "raises"}
            return [out]
        return [_failed_call(ctx, "BN-NORMALIZE")]
    base = _y_train_cmp(ctx, ctx.profile, ctx.model, ctx.eps)
    if base is None:
        return []
    case = ctx.case
    ks = _kappas(ctx)
    kappa = float(np.max(ks)) if ks.size else 0.0
    covered = ["BN-NORMALIZE", "BN-VAR-BIASED", "BN-EPS-INSIDE"]
    covered.append("BN-AFFINE-OFF" if case.affine == "off" else "BN-AFFINE")
    if case.dtype in ("float16", "bfloat16"):
        covered.append("BN-DTYPE-ACCUM")
    if case.dtype == "float64":
        covered.append("BN-DTYPE-F64")
    if kappa >= ctx.kappa_thr:
        covered.append("BN-VAR-STABLE")
    if case.eps == "default":
        covered.append("BN-DEFAULT-EPS")
    if case.special == "constant":
        covered.append("BN-CONSTANT-CHANNEL")
    if case.special in ("nan", "inf"):
        covered.append("BN-NONFINITE-CONFINED")
    if base.ok:
        return [Outcome(c, True, base) for c in covered]
    return [_attribute_y(ctx, base, kappa, covered)]


def _leaks_nonfinite(ctx) -> bool:
    """Other channels non-finite because of the special value: only if the same case without it
    keeps them finite (a float16 x^2 that overflows on its own is not a leak)."""
    leaked = False
    for k in range(ctx.case.steps):
        y = ctx.trace.get(f"train_{k}/y")
        if y is not None and np.shape(y) == ctx.case.shape:
            mask = ctx.channel_mask(ctx.case.shape)
            if not np.all(np.isfinite(np.asarray(y, np.float64)[mask])):
                leaked = True
    if not leaked or ctx.rerun is None:
        return leaked
    try:
        outs = ctx.rerun(ctx.case.replace(special="none"))
    except Exception:
        return True
    return not any(not o.ok and o.comparison is not None and o.comparison.actual is not None
                   and not np.isfinite(o.comparison.actual) for o in outs)


def _kappas(ctx):
    """|mean|/std of every channel of the training batches; a NaN/Inf channel is left out, and a
    constant channel is infinitely ill-conditioned unless its value is 0 (channel_kappa says so)."""
    from bnconf.cases.case import channel_kappa
    keep = np.ones(ctx.case.num_features, bool)
    if ctx.case.special in ("nan", "inf"):
        keep[ctx.case.special_channel % ctx.case.num_features] = False
    ks = [channel_kappa(ctx.arrays[f"x_train_{k}"], ctx.fa)[keep] for k in range(ctx.case.steps)]
    return np.concatenate(ks) if ks else np.zeros(1)


def convention_attribution(ctx, base, cmp_under, expect):
    """If flipping one forward convention makes cmp_under(profile) pass, the failure is that
    convention's clause. Returns an Outcome or None. A marginal failure (ratio <= 2) is not
    evidence for a convention: rounding can flip it. expect(profile) gives the (expected,
    bound) arrays: the two conventions must differ by DISTINCT times the wider bound somewhere,
    or an alternative whose own bound is huge (a running variance near eps under
    sqrt(var - eps)) "passes" anything."""
    if base.ratio <= 2:
        return None
    for fld in ("eps_placement", "normalize_variance"):
        for alt in (v for v in FLIPS[fld] if v != ctx.eff.conventions[fld] and
                    not (ctx.case.dtype not in ("float32", "float64") and v in ATTRIBUTION_ONLY)):
            alt_profile = ctx.eff.with_convention(**{fld: alt})
            with np.errstate(all="ignore"):
                cmp = cmp_under(alt_profile)
                (e_s, b_s), (e_a, b_a) = expect(ctx.eff), expect(alt_profile)
                fine = np.isfinite(e_s) & np.isfinite(e_a) & np.isfinite(b_s) & np.isfinite(b_a)
                distinct = np.any((np.abs(e_s - e_a) > DISTINCT * np.maximum(b_s, b_a))[fine])
            clause = ctx.clause_for(fld)
            if cmp is not None and cmp.ok and clause and distinct:
                return Outcome(clause, False, base, f"matches {fld}={alt}", {fld: alt})
    return None


def _feature_axis_used(ctx):
    """BN-AXES: the other conventional feature axis (channels first or last) that the output
    was normalized along, or None. Judged where the parameters fit that axis (affine off, or as
    many scales as that axis has positions) and the two axes' outputs are distinguishable."""
    case = ctx.case
    y = ctx.trace.get("train_0/y")
    if case.rank < 3 or y is None or np.shape(y) != case.shape or case.dtype not in ("float32", "float64"):
        return None
    x = ctx.arrays["x_train_0"]
    for alt in (1, case.rank - 1):
        if alt == case.feature_axis or (ctx.weight is not None and np.size(ctx.weight) != x.shape[alt]):
            continue
        with np.errstate(all="ignore"):
            y_alt = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, alt, ctx.eff)[0]
            y_spec = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.eff)[0]
            u = ctx.u_out(ctx.trace.get("train_0/y_dtype", case.dtype))
            bound = tolerance.y_train_bound(ctx.model, x, ctx.weight, ctx.bias, ctx.eps, alt, u, y_alt,
                                            _placement(ctx, ctx.eff))
            fine = np.isfinite(y_alt) & np.isfinite(y_spec) & np.isfinite(bound)
        if np.any(np.abs(y_alt - y_spec)[fine] > DISTINCT * bound[fine]) and compare(y, y_alt, bound).ok:
            return alt
    return None


def case_affine_ignored(ctx) -> bool:
    """Scale and shift ignored: the output is x_hat itself. Judged only on the channels without a
    NaN/Inf, only where gamma and beta change the output by several bounds (DISTINCT), and only
    in float32/float64: in float16 a folded x*inv + (beta - mean*inv) can lose beta to
    cancellation, which rounding makes look the same."""
    if ctx.case.affine != "random" or ctx.weight is None or "train_0/y" not in ctx.trace \
            or ctx.case.dtype not in ("float32", "float64"):
        return False
    x = ctx.arrays["x_train_0"]
    mask = ctx.channel_mask(x.shape)
    u = ctx.u_out(ctx.trace.get("train_0/y_dtype", ctx.case.dtype))
    with np.errstate(all="ignore"):
        y_spec = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.eff)[0]
        y_plain = oracle.train_forward(x, None, None, ctx.eps, ctx.fa, ctx.eff)[0]
        xm = np.where(mask, x, 0)
        bound = tolerance.y_train_bound(ctx.model, xm, None, None, ctx.eps, ctx.fa, u, _masked(y_plain, mask))
        both = mask & np.isfinite(y_spec) & np.isfinite(y_plain) & np.isfinite(bound)
        if not np.any(np.abs(y_spec - y_plain)[both] > DISTINCT * bound[both]):
            return False
        y = ctx.trace["train_0/y"]
        if np.shape(y) != x.shape:
            return False
        return bool(compare(_masked(y, mask), _masked(y_plain, mask), np.where(mask, bound, np.inf)).ok)


def _init_attribution(ctx, base):
    """With the framework's own initialisation (affine "default"), a per-channel constant
    offset or scale that explains the output means gamma/beta did not start at 1/0 (BN-INIT)."""
    if ctx.case.affine != "default" or "train_0/y" not in ctx.trace or "BN-INIT" not in ctx.applicable \
            or ctx.case.dtype not in ("float32", "float64"):  # low precision: offsets come from rounding
        return None
    if not _holds_centred(ctx, "BN-INIT", base.key):
        # ill-conditioned and the centred case is fine: a variance that lost precision scales each
        # channel by a constant, the same signature as gamma != 1
        return None
    x = ctx.arrays["x_train_0"]
    y = np.asarray(ctx.trace["train_0/y"], np.float64)
    xhat = oracle.train_forward(x, None, None, ctx.eps, ctx.fa, ctx.profile)[0]
    if y.shape != xhat.shape:
        return None
    axes = oracle.reduce_axes(x.ndim, ctx.fa)
    beta = y.mean(axis=axes)
    with np.errstate(all="ignore"):
        gamma = ((y - oracle._per_feature(beta, x.ndim, ctx.fa)) * xhat).sum(axis=axes) / (xhat * xhat).sum(axis=axes)
    if not np.all(np.isfinite(gamma)):
        return None
    fitted = oracle._per_feature(gamma, x.ndim, ctx.fa) * xhat + oracle._per_feature(beta, x.ndim, ctx.fa)
    bound = tolerance.y_train_bound(ctx.model, x, gamma, beta, ctx.eps, ctx.fa, ctx.u_out(ctx.trace["train_0/y_dtype"]),
                                    fitted)
    # gamma is only identifiable where x_hat has spread: a channel with variance ~ eps or below
    # (a constant channel) has x_hat ~ 0 and any gamma fits it
    spread = (xhat * xhat).mean(axis=axes) > 0.5
    clearly_off = np.any(spread & (np.abs(gamma - 1) > 1e-2)) or np.any(np.abs(beta) > 1e-2)  # not rounding noise
    # initialisers are constants (ones, zeros, a fill value): the same gamma and beta in every
    # channel. A scatter around 1 (0.993, 1.008, 1.019) is a variance error, not an initialiser.
    g_s = gamma[spread]
    uniform = (g_s.size == 0 or np.ptp(g_s) <= 1e-3 * max(1.0, float(np.max(np.abs(g_s))))) \
        and np.ptp(beta) <= 1e-3 * max(1.0, float(np.max(np.abs(beta))))
    clearly_off = clearly_off and uniform
    if clearly_off and compare(y, fitted, bound).ok:
        return Outcome("BN-INIT", False, base, f"output is gamma*x_hat + beta with gamma={np.round(gamma, 4).tolist()}, "
                       f"beta={np.round(beta, 4).tolist()}: not initialised to 1 and 0")
    return None


def float64_in_float32(ctx, clause, cmp_fn, base, conditioning=True):
    """BN-DTYPE-F64 (or a float32-stored eps) when a float64 failure is clear (>= 10 times the
    float64 bound: float32 rounding diluted in a running statistic is tens of times it, in an
    output millions), within the float32 model, the same case in float32 passes, and (where
    centring is not exact in float32 anyway) so does the case centred fail: a float64 one-pass
    kernel passes it. Asked after the convention flips: a convention error too small for the
    float32 bound passes in float32 too, so that alone is no evidence. None otherwise."""
    case = ctx.case
    if ctx.rerun is None or case.dtype != "float64" or base.ratio < 10:
        return None
    alt = cmp_fn(ctx.model.with_compute("float32"))
    # Two values per channel centre to (a, -a), exact in float32: there the centred case is no
    # evidence either way. (A constant channel centres to 0, exact too, but there a float64
    # one-pass kernel shows the same signature as float32 arithmetic: no exemption.)
    exact_centred = case.n_per_channel <= 2
    if not (alt is not None and alt.ok and _passes(ctx, case.replace(dtype="float32"), clause, base.key)
            and (exact_centred or _holds_centred(ctx, clause, base.key))):
        return None
    eps32 = float(np.float32(case.eps)) if case.eps != "default" else None
    if conditioning and eps32 is not None and eps32 != float(case.eps) \
            and _passes(ctx, case.replace(eps=eps32), clause, base.key):
        # passes exactly when asked for float32(eps): eps was stored as a float32 (ONNX's
        # FLOAT attributes); float32 arithmetic would still fail there
        eps_clause = ctx.clause_for("eps_placement") or clause
        return Outcome(eps_clause, False, base, f"{clause}: eps is used rounded to float32 (passes when "
                       "asked for float32(eps))", {"eps_placement": "other"})
    return Outcome("BN-DTYPE-F64", False, base, f"{clause}: within the model only at float32 precision, "
                   "and the same case in float32 passes", {"compute_dtype": "float32"})


def numeric_attribution(ctx, clause, cmp_fn, base, conditioning=True):
    """A failing comparison that a precision or conditioning explains is attributed there:
    float64 computed in float32 (BN-DTYPE-F64, see float64_in_float32), low-precision statistics
    (BN-DTYPE-ACCUM), an ill-conditioned case (BN-VAR-STABLE: the same case centred passes).
    cmp_fn(model) recomputes the comparison under another model."""
    case = ctx.case
    if ctx.rerun is None:  # inside a differential re-run: no further attribution
        return Outcome(clause, False, base)
    f64 = float64_in_float32(ctx, clause, cmp_fn, base, conditioning)
    if f64 is not None:
        return f64
    if case.dtype in ("float16", "bfloat16"):
        alt = cmp_fn(ctx.model.with_compute(case.dtype))
        if alt is not None and alt.ok:
            return Outcome("BN-DTYPE-ACCUM", False, base, f"{clause}: within the model only at {case.dtype} precision")
    if conditioning:
        ks = _kappas(ctx)
        kappa = float(np.max(ks)) if ks.size else 0.0
        if kappa >= ctx.kappa_thr and _passes(ctx, centred(case), clause, base.key):
            return Outcome("BN-VAR-STABLE", False, base, f"{clause}: fails at |mean|/std = {kappa:.3g} and passes "
                           "for the same case centred", {"variance_algorithm": "one_pass"})
    return Outcome(clause, False, base)


def _passes(ctx, variant, clause, key: str = "") -> bool:
    """Differential diagnosis: does the implementation pass `clause` on a variant of the case?
    With `key` (the failing quantity, e.g. "train_0/y"), a failure of that quantity under any
    clause counts too: inside the re-run a failure can be attributed to another clause."""
    try:
        outs = ctx.rerun(variant)
    except Exception:
        return False

    def about(o):
        return o.clause == clause or (key and o.comparison is not None and o.comparison.key == key)
    # positive evidence only: a variant the clause is not judged on (its check does not apply
    # there) is no pass
    return any(about(o) for o in outs) and not any(not o.ok and about(o) for o in outs)


DISTINCT = 4.0


def _distinguishable(ctx, alt_profile, eps=None, model=None) -> bool:
    """A convention flip is evidence only where the two conventions' outputs differ by several
    times the bound (DISTINCT) at a point where both are finite. Otherwise a low-precision case
    a few ulps off matches either by rounding (torch float16 at eps=0.029, 3.4x the bound), and
    a NaN from another cause (a negative one-pass variance) "matches" the NaN that
    sqrt(var - eps) gives on a constant channel."""
    alt_eps = ctx.eps if eps is None else eps
    model = model or ctx.model
    # on an ill-conditioned case the flipped model's own bound (per-position statistics of a few
    # values at |mean|/std = 1000) is what a match must beat; elsewhere the spec's statistics set it
    alt_reduction = alt_profile.reduction if ctx.case.kappa >= ctx.kappa_thr else ctx.profile.reduction
    for k in range(ctx.case.steps):
        x = ctx.arrays[f"x_train_{k}"]
        mask = ctx.channel_mask(x.shape)
        u = ctx.u_out(ctx.trace.get(f"train_{k}/y_dtype", ctx.case.dtype))
        with np.errstate(all="ignore"):
            y_spec = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
            y_alt = oracle.train_forward(x, ctx.weight, ctx.bias, alt_eps, ctx.fa, alt_profile)[0]
            xm = np.where(mask, x, 0)
            # the wider of the two bounds: an alternative whose own bound is huge (eps = 0 on a
            # near-constant channel) "passes" anything and is no evidence
            bound = np.maximum(
                tolerance.y_train_bound(model, xm, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, _masked(y_spec, mask),
                                        _placement(ctx, ctx.profile), ctx.profile.reduction),
                tolerance.y_train_bound(model, xm, ctx.weight, ctx.bias, alt_eps, ctx.fa, u, _masked(y_alt, mask),
                                        _placement(ctx, alt_profile), alt_reduction))
            both = mask & np.isfinite(y_spec) & np.isfinite(y_alt) & np.isfinite(bound)
            if np.any(np.abs(y_spec - y_alt)[both] > DISTINCT * bound[both]):
                return True
    return False


def _holds_centred(ctx, clause, key: str = "") -> bool:
    """On an ill-conditioned case a one-pass variance error can mimic any variance-scaling
    convention by chance (Keras[torch] float16 at |mean|/std = 1000 "matched" eps outside the
    sqrt): a convention does not depend on conditioning, so the same case centred must fail
    the same clause too."""
    ks = _kappas(ctx)
    if not ks.size or float(np.max(ks)) < ctx.kappa_thr or ctx.rerun is None:
        return True
    return not _passes(ctx, centred(ctx.case), clause, key)


# Conventions no profile follows, tried only where rounding cannot mimic them (a float16 one-pass
# variance "matches" eps absent or a running std by chance).
ATTRIBUTION_ONLY = {"absent", "std"}


def _flips(ctx, fld):
    low = ctx.case.dtype not in ("float32", "float64")
    return [v for v in FLIPS[fld] if v != ctx.profile.conventions[fld] and not (low and v in ATTRIBUTION_ONLY)]


def _placement(ctx, profile) -> str:
    """The eps placement whose error model bounds a comparison: the profile's in float32/float64;
    in a low precision the spec's, so that a wider bound never makes a rounding error "match"."""
    return profile.eps_placement if ctx.case.dtype in ("float32", "float64") else "inside_sqrt"


def _attribute_y(ctx, base, kappa, covered):
    case = ctx.case
    fits = []
    for fld in ("eps_placement", "normalize_variance", "reduction") if base.ratio > 2 else ():
        for alt in _flips(ctx, fld):
            alt_profile = ctx.profile.with_convention(**{fld: alt})
            with np.errstate(all="ignore"):
                cmp = _y_train_cmp(ctx, alt_profile, ctx.model, ctx.eps, skip_constant=True)
            if cmp is not None and cmp.ok and ctx.clause_for(fld):
                fits.append((cmp.ratio, fld, alt, alt_profile))
    if fits:
        # only the best fit is evidence: a flip that fits within its bound while another fits
        # far closer (eps outside the sqrt at |mean|/std = 300 also "passes" as unbiased
        # normalization, at 0.9 of the bound) says nothing
        _, fld, alt, alt_profile = min(fits, key=lambda f: f[0])
        clause = ctx.clause_for(fld)
        # a convention no profile follows must also stand out from float32 rounding: float32
        # arithmetic on two values per channel rounds x_hat = +-sqrt(var/(var + eps)) to
        # exactly +-1, what eps absent gives
        floor = ctx.model.with_compute("float32") if alt in ATTRIBUTION_ONLY and case.dtype == "float64" else None
        if _distinguishable(ctx, alt_profile, model=floor) and _holds_centred(ctx, clause, base.key):
            return Outcome(clause, False, base, f"matches {fld}={alt}", {fld: alt})
    used = _feature_axis_used(ctx) if base.ratio > 2 else None
    if used is not None:
        return Outcome("BN-AXES", False, base, f"matches feature_axis={used}: the feature axis it was given "
                       f"({case.feature_axis}) was ignored", {"feature_axis_used": used})
    if case_affine_ignored(ctx):
        return Outcome("BN-AFFINE", False, base, "matches the output with gamma = 1 and beta = 0: the scale and "
                       "shift passed were ignored", {"affine": "ignored"})
    if case.eps != "default" and case.dtype in ("float32", "float64") and base.ratio > 2 \
            and ctx.clause_for("eps_placement"):
        for k in EPS_FACTORS:
            cmp = _y_train_cmp(ctx, ctx.profile, ctx.model, ctx.eps * k)
            if cmp is not None and cmp.ok and _distinguishable(ctx, ctx.profile, eps=ctx.eps * k) \
                    and _holds_centred(ctx, ctx.clause_for("eps_placement"), base.key):
                return Outcome(ctx.clause_for("eps_placement"), False, base, f"matches {k:g} eps: eps is not used "
                               "as given", {"eps_scale": k})
    if case.eps == "default" and case.dtype in ("float32", "float64") and base.ratio > 2:  # clear deviations only
        for e in EPS_CANDIDATES:
            if ctx.eps is not None and np.isclose(e, ctx.eps):
                continue
            cmp = _y_train_cmp(ctx, ctx.profile, ctx.model, e)
            if cmp is not None and cmp.ok and _distinguishable(ctx, ctx.profile, eps=e) \
                    and _holds_centred(ctx, "BN-DEFAULT-EPS", base.key):
                return Outcome("BN-DEFAULT-EPS", False, base, f"matches eps={e:g}", {"default_eps": e})
    num = numeric_attribution(ctx, "BN-NORMALIZE", lambda m: _y_train_cmp(ctx, ctx.profile, m, ctx.eps), base)
    if num.clause != "BN-NORMALIZE":
        return num
    # after precision and conditioning: a variance that lost precision scales each channel by a
    # constant, which an initial gamma != 1 would too
    init = _init_attribution(ctx, base)
    if init is not None:
        return init
    if case.special == "constant" and (base.index is None or len(base.index) != len(case.shape) or
                                       base.index[ctx.fa] == case.special_channel % case.num_features):
        # only where the worst error sits in the constant channel itself
        return Outcome("BN-CONSTANT-CHANNEL", False, base, "case has a constant channel")
    if case.special in ("nan", "inf") and _leaks_nonfinite(ctx):
        return Outcome("BN-NONFINITE-CONFINED", False, base, f"{case.special} in channel "
                       f"{case.special_channel % case.num_features} made other channels non-finite")
    if case.affine == "off":
        return Outcome("BN-AFFINE-OFF", False, base)
    return Outcome("BN-NORMALIZE", False, base)


@check("mean_relation", emits=("BN-MEAN", *NUMERIC))
def mean_relation(ctx: Ctx):
    """BN-MEAN: whatever the variance convention, each channel's output averages to beta."""
    if not _trainable_case(ctx) or "train_0/y" not in ctx.trace or ctx.case.special != "none":
        return []
    x = ctx.arrays["x_train_0"]
    y = np.asarray(ctx.trace["train_0/y"], np.float64)
    if y.shape != x.shape:
        return []
    axes = oracle.reduce_axes(x.ndim, ctx.fa)
    y_exp = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
    n = int(np.prod([x.shape[a] for a in axes]))
    beta = np.zeros(x.shape[ctx.fa]) if ctx.bias is None else np.asarray(ctx.bias, np.float64)

    # a channel whose exact output is not finite under the profile (eps placement at var = 0) has
    # no mean to judge: that deviation is the eps clause's (BN-MEAN depends on BN-EPS-INSIDE)
    finite = np.all(np.isfinite(y_exp), axis=axes)

    def cmp_fn(model):
        bound = tolerance.y_train_bound(model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa,
                                        ctx.u_out(ctx.trace["train_0/y_dtype"]), y_exp, _placement(ctx, ctx.profile))
        allowed = bound.mean(axis=axes) + model.safety * model.growth(n) * model.u_c * np.abs(y).mean(axis=axes)
        return compare(np.where(finite, y.mean(axis=axes), 0.0), np.where(finite, beta, 0.0),
                       np.where(finite, allowed, np.inf), "per-channel mean of y vs beta", key="train_0/y:mean")
    cmp = cmp_fn(ctx.model)
    if not cmp.ok:
        num = numeric_attribution(ctx, "BN-MEAN", cmp_fn, cmp)
        return [num if num.clause != "BN-MEAN" else _init_attribution(ctx, cmp) or num]
    return [Outcome("BN-MEAN", cmp.ok, cmp)]


# ------------------------------------------------------------------- running stats
def _init_state(ctx):
    if "init/running_mean" in ctx.trace:
        m, v = ctx.trace["init/running_mean"], ctx.trace["init/running_var"]
    else:
        c = ctx.case.num_features
        m = np.full(c, ctx.profile.initial["running_mean"])
        v = np.full(c, ctx.profile.initial["running_var"])
    return np.asarray(m, float), np.asarray(v, float)


def _running_expected(ctx, profile, momentum, model=None):
    """[(running mean, running var, their bounds)] after each training step under a profile."""
    model = model or ctx.model
    init = _init_state(ctx)
    if profile.momentum_form == "debiased_ema":
        init = (np.zeros_like(init[0]), np.zeros_like(init[1]))
    state = (init[0], init[1], np.zeros_like(init[0]), np.zeros_like(init[1]), 0)
    batches = [ctx.arrays[f"x_train_{k}"] for k in range(ctx.case.steps)]
    bounds = tolerance.running_bounds(model, batches, momentum, profile, ctx.fa, init, ctx.u_out(ctx.case.dtype))
    out = []
    for k, x in enumerate(batches):
        mean, var, n = oracle.batch_stats(x, ctx.fa)
        state = oracle.update_running(state, mean.reshape(-1), var.reshape(-1), n, momentum, profile,
                                      profile.running_var_eps * (ctx.eps or 0.0))
        out.append((state[0], state[1], bounds[k][0], bounds[k][1]))
    return out


def _running_cmp(ctx, profile, momentum, model=None):
    keep = ctx.mask_special()
    cm, cv = [], []
    for k, (em, ev, bm, bv) in enumerate(_running_expected(ctx, profile, momentum, model)):
        am, av = ctx.trace.get(f"train_{k}/running_mean"), ctx.trace.get(f"train_{k}/running_var")
        if am is None:
            return None, None
        cm.append(compare(np.where(keep, am, 0), np.where(keep, em, 0), np.where(keep, bm, np.inf),
                          f"after step {k}", key=f"train_{k}/running_mean"))
        cv.append(compare(np.where(keep, av, 0), np.where(keep, ev, 0), np.where(keep, bv, np.inf),
                          f"after step {k}", key=f"train_{k}/running_var"))
    return _worst(cm), _worst(cv)


def _running_var_distinct(ctx, alt_profile) -> bool:
    """A running-variance convention is evidence only where it predicts another running variance
    than the profile's by several bounds (a constant channel's 0 is 0 under every estimator)."""
    keep = ctx.mask_special()
    spec_states = _running_expected(ctx, ctx.profile, ctx.momentum)
    alt_states = _running_expected(ctx, alt_profile, ctx.momentum)
    for (_, v1, _, b1), (_, v2, _, b2) in zip(spec_states, alt_states):
        with np.errstate(all="ignore"):
            fin = keep & np.isfinite(v1) & np.isfinite(v2)
            if np.any(np.abs(v1 - v2)[fin] > DISTINCT * np.maximum(b1, b2)[fin]):
                return True
    return False


def _never_updated(ctx) -> bool:
    init = _init_state(ctx)
    return all(np.array_equal(np.asarray(ctx.trace.get(f"train_{k}/running_mean")), init[0])
               and np.array_equal(np.asarray(ctx.trace.get(f"train_{k}/running_var")), init[1])
               for k in range(ctx.case.steps))


@check("running_stats", "running_stats_cumulative", "default_momentum",
       emits=("BN-MOMENTUM-BATCH-WEIGHT", "BN-MOMENTUM-OLD-WEIGHT", "BN-MOMENTUM-CUMULATIVE", "BN-MOMENTUM-DEBIASED",
              "BN-RUNVAR-UNBIASED", "BN-RUNVAR-BIASED", "BN-DEFAULT-MOMENTUM", *NUMERIC))
def running_stats(ctx: Ctx):
    p, case = ctx.profile, ctx.case
    if p.momentum_form == "none" or not case.track_running_stats or not _trainable_case(ctx):
        return []
    if "error" in ctx.trace and ctx.trace["error"]["phase"].startswith(("build", "train")):
        return []
    if "train_0/running_mean" not in ctx.trace:
        return [Outcome(ctx.clause_for("momentum_form"), False, note="no running statistics were reported "
                        "although the layer tracks them")]
    cumulative = ctx.momentum is None and p.cumulative_when_momentum_none
    if ctx.momentum is None and not cumulative:
        return []   # the profile declares no default momentum: nothing to predict the update with
    m_clause = "BN-MOMENTUM-CUMULATIVE" if cumulative else ctx.clause_for("momentum_form")
    v_clause = ctx.clause_for("running_variance")
    cm, cv = _running_cmp(ctx, p, ctx.momentum)
    if cm is None:
        return []
    extra = ["BN-DEFAULT-MOMENTUM"] if case.momentum == "default" else []
    if cm.ok and cv.ok:
        return [Outcome(c, True, cm) for c in [m_clause] + extra] + [Outcome(v_clause, True, cv)]
    out = []
    if _never_updated(ctx):
        # no update at all: the momentum clause's finding (even where the batch mean happens to
        # equal the initial one); the variance estimator cannot be judged
        return [Outcome(m_clause, False, cv if cm.ok else cm, "the running statistics were never updated")]
    if cm.ok and not cv.ok:
        # the running mean alone confirms the momentum (and the default one): it does not depend
        # on the variance convention that failed
        out += [Outcome(c, True, cm) for c in [m_clause] + extra]
        for alt in _flips(ctx, "running_variance"):
            if alt in ATTRIBUTION_ONLY and case.special != "none":
                continue    # a constant channel's variance is 0 = sqrt(0): no evidence for a running std
            alt_p = p.with_convention(running_variance=alt)
            _, cv2 = _running_cmp(ctx, alt_p, ctx.momentum)
            if cv2 is not None and cv2.ok and cv.ratio > 2 and _running_var_distinct(ctx, alt_p) \
                    and _holds_centred(ctx, v_clause, cv.key):
                # a marginal failure is no evidence (rounding), nor one the two estimators agree on,
                # nor one that centring the case removes (a one-pass variance matching sqrt(var))
                return out + [Outcome(v_clause, False, cv, f"matches running_variance={alt}",
                                      {"running_variance": alt})]
        if ctx.eps and case.dtype in ("float32", "float64"):   # no profile's: never where rounding can mimic it
            alt_p = replace(p, running_var_eps=1.0)
            _, cv2 = _running_cmp(ctx, alt_p, ctx.momentum)
            if cv2 is not None and cv2.ok and cv.ratio > 2 and _running_var_distinct(ctx, alt_p) \
                    and _holds_centred(ctx, v_clause, cv.key):
                return out + [Outcome(v_clause, False, cv, "matches the running variance fed var + eps",
                                      {"running_var_eps": 1.0})]
        return out + [numeric_attribution(ctx, v_clause, lambda m: _running_cmp(ctx, p, ctx.momentum, m)[1], cv)]
    if not cumulative and p.momentum_form in FLIPS["momentum_form"] and max(cm.ratio, cv.ratio) > 2:
        alt = next(v for v in FLIPS["momentum_form"] if v != p.momentum_form)
        for prof in (p.with_convention(momentum_form=alt),
                     p.with_convention(momentum_form=alt, running_variance=next(
                         v for v in FLIPS["running_variance"] if v != p.running_variance))):
            cm2, cv2 = _running_cmp(ctx, prof, ctx.momentum)
            if cm2 is not None and cm2.ok and cv2.ok:
                res = [Outcome(m_clause, False, cm, f"matches momentum_form={alt}", {"momentum_form": alt})]
                if prof.running_variance != p.running_variance:
                    res.append(Outcome(v_clause, False, cv, f"matches running_variance={prof.running_variance}",
                                       {"running_variance": prof.running_variance}))
                return res
    if case.momentum == "default":
        for m in MOMENTUM_CANDIDATES:
            if ctx.momentum is not None and np.isclose(m, ctx.momentum):
                continue
            cm2, cv2 = _running_cmp(ctx, p, m)
            if cm2 is not None and cm2.ok:
                return [Outcome("BN-DEFAULT-MOMENTUM", False, cm, f"matches momentum={m:g}", {"default_momentum": m})]
    if not cm.ok:
        out.append(numeric_attribution(ctx, m_clause, lambda m: _running_cmp(ctx, p, ctx.momentum, m)[0], cm))
    if not cv.ok:
        out.append(numeric_attribution(ctx, v_clause, lambda m: _running_cmp(ctx, p, ctx.momentum, m)[1], cv))
    return out


@check("initial_state", emits=("BN-INIT",))
def initial_state(ctx: Ctx):
    if "init/running_mean" not in ctx.trace or not ctx.case.track_running_stats:
        return []
    init = ctx.profile.initial
    c = ctx.case.num_features
    exp = np.concatenate([np.full(c, init["running_mean"]), np.full(c, init["running_var"])])
    act = np.concatenate([ctx.trace["init/running_mean"], ctx.trace["init/running_var"]])
    cmp = compare(act, exp, 0.0, "initial running mean then running var", key="init/running_mean+var")
    return [Outcome("BN-INIT", cmp.ok, cmp, "" if cmp.ok else "the running statistics do not start at the "
                    "profile's initial values")]


@check("step_counter", emits=("BN-NUM-BATCHES-TRACKED",))
def step_counter(ctx: Ctx):
    if "init/counter" not in ctx.trace or "eval/counter" not in ctx.trace:
        return []
    got = [ctx.trace[f"train_{k}/counter"] for k in range(ctx.case.steps)] + [ctx.trace["eval/counter"]]
    start = ctx.trace["init/counter"]
    want = [start + k + 1 for k in range(ctx.case.steps)] + [start + ctx.case.steps]
    ok = got == want
    return [Outcome("BN-NUM-BATCHES-TRACKED", ok, note="" if ok else f"counter {got}, expected {want}")]


# ----------------------------------------------------------------------------- eval
def _stats_before_eval(ctx):
    k = ctx.case.steps - 1
    return ctx.trace.get(f"train_{k}/running_mean"), ctx.trace.get(f"train_{k}/running_var")


def _eval_tracked(ctx):
    return ctx.case.track_running_stats and ctx.profile.momentum_form != "none"


@check("y_eval", emits=("BN-EVAL-RUNNING", *NUMERIC))
def y_eval(ctx: Ctx):
    if not _eval_tracked(ctx) or "eval/y" not in ctx.trace or ctx.case.special != "none":
        return []
    rm, rv = _stats_before_eval(ctx)
    if rm is None:
        return []
    x = ctx.arrays["x_eval"]
    m = oracle._per_feature(rm, x.ndim, ctx.fa)
    v = oracle._per_feature(rv, x.ndim, ctx.fa)

    def expect(profile, model=None):
        ye = tolerance.in_dtype_range(oracle.normalize(x, m, v, ctx.eps, ctx.weight, ctx.bias, ctx.fa,
                                                       profile.eps_placement), ctx.trace["eval/y_dtype"])
        return ye, tolerance.y_eval_bound(model or ctx.model, x, ctx.weight, ctx.bias, rm, rv, ctx.eps, ctx.fa,
                                          ctx.u_out(ctx.trace["eval/y_dtype"]), ye, _placement(ctx, profile))

    def cmp_under(profile, model=None):
        ye, bound = expect(profile, model)
        return compare(ctx.trace["eval/y"], ye, bound, "eval output with the reported running statistics",
                       key="eval/y")

    def cmp_fn(model):
        return cmp_under(ctx.eff, model)
    cmp = cmp_fn(ctx.model)
    if not cmp.ok:
        conv = convention_attribution(ctx, cmp, cmp_under, expect)
        if conv is not None:
            return [conv]
    if cmp.ok:
        return [Outcome("BN-EVAL-RUNNING", True, cmp)]
    if ctx.case.dtype in ("float16", "bfloat16"):
        # a running mean rounded to bfloat16 can cancel x exactly (x - rm = 0), which looks like
        # batch statistics on a channel that rounding made constant: precision is tried first
        num = numeric_attribution(ctx, "BN-EVAL-RUNNING", cmp_fn, cmp, conditioning=False)
        if num.clause != "BN-EVAL-RUNNING":
            return [num]
    y_batch = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
    b2 = tolerance.y_train_bound(ctx.model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa,
                                 ctx.u_out(ctx.trace["eval/y_dtype"]), y_batch, _placement(ctx, ctx.profile))
    # evidence only where batch and running normalization differ beyond the bound (after one
    # step at a small old-value weight they can coincide); cmp kept its expected array (it failed)
    if compare(ctx.trace["eval/y"], y_batch, b2).ok and not compare(cmp.expected_array, y_batch, DISTINCT * b2).ok:
        return [Outcome("BN-EVAL-RUNNING", False, cmp, "eval normalized with batch statistics")]
    return [numeric_attribution(ctx, "BN-EVAL-RUNNING", cmp_fn, cmp, conditioning=False)]


@check("y_eval_no_running", emits=("BN-EVAL-BATCH", *NUMERIC))
def y_eval_no_running(ctx: Ctx):
    if _eval_tracked(ctx) or "eval/y" not in ctx.trace or ctx.case.special != "none" or not _trainable_case(ctx):
        return []
    x = ctx.arrays["x_eval"]
    y_exp = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.eff)[0]

    def cmp_fn(model):
        bound = tolerance.y_train_bound(model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa,
                                        ctx.u_out(ctx.trace["eval/y_dtype"]), y_exp, _placement(ctx, ctx.eff))
        return compare(ctx.trace["eval/y"], y_exp, bound, "eval output with batch statistics", key="eval/y")
    cmp = cmp_fn(ctx.model)
    if not cmp.ok:
        return [numeric_attribution(ctx, "BN-EVAL-BATCH", cmp_fn, cmp)]
    return [Outcome("BN-EVAL-BATCH", True, cmp)]


@check("eval_no_update", emits=("BN-EVAL-NO-UPDATE",))
def eval_no_update(ctx: Ctx):
    rm, rv = _stats_before_eval(ctx)
    if rm is None or "eval/running_mean" not in ctx.trace:
        return []
    before = np.concatenate([rm, rv])
    after = np.concatenate([ctx.trace["eval/running_mean"], ctx.trace["eval/running_var"]])
    cmp = compare(after, before, 0.0, "running statistics after eval vs before", key="eval/running_mean+var")
    return [Outcome("BN-EVAL-NO-UPDATE", cmp.ok, cmp, "" if cmp.ok else "eval changed the running statistics")]


# ------------------------------------------------------------------------ gradients
def _grad_comparison(ctx, phase, exp, bounds):
    """The worst of dx, dgamma, dbeta of one phase against the oracle's and their bounds."""
    cmps = [compare(ctx.trace[f"{phase}/dx"], exp[0], bounds[0], f"dx ({phase})", key=f"{phase}/dx")]
    if f"{phase}/dweight" in ctx.trace and ctx.case.affine != "off":
        cmps.append(compare(ctx.trace[f"{phase}/dweight"], exp[1], bounds[1], f"dgamma ({phase})",
                            key=f"{phase}/dweight"))
        cmps.append(compare(ctx.trace[f"{phase}/dbias"], exp[2], bounds[2], f"dbeta ({phase})", key=f"{phase}/dbias"))
    return _worst(cmps)


@check("grads_train", emits=("BN-GRAD-TRAIN", *NUMERIC))
def grads_train(ctx: Ctx):
    if "train_0/dx" not in ctx.trace or not _trainable_case(ctx) or ctx.case.special != "none" \
            or not ctx.standard_forward():
        return []
    x, dy = ctx.arrays["x_train_0"], ctx.arrays["dy_train"]
    exp = oracle.grads_train(x, dy, ctx.weight, ctx.eps, ctx.fa)
    u = ctx.u_out(ctx.case.dtype)

    def cmp_fn(model):
        bounds = tolerance.grads_train_bound(model, x, dy, ctx.weight, ctx.eps, ctx.fa, u, exp)
        return _grad_comparison(ctx, "train_0", exp, bounds)
    w = cmp_fn(ctx.model)
    if not w.ok:
        return [numeric_attribution(ctx, "BN-GRAD-TRAIN", cmp_fn, w)]
    return [Outcome("BN-GRAD-TRAIN", w.ok, w)]


@check("grads_eval", emits=("BN-GRAD-EVAL", *NUMERIC))
def grads_eval(ctx: Ctx):
    if "eval/dx" not in ctx.trace or ctx.case.special != "none" or not _trainable_case(ctx) \
            or not ctx.standard_forward():
        return []
    x, dy = ctx.arrays["x_eval"], ctx.arrays["dy_eval"]
    u = ctx.u_out(ctx.case.dtype)
    tracked = _eval_tracked(ctx)
    rm, rv = _stats_before_eval(ctx)
    if tracked and rm is None:
        return []
    exp = (oracle.grads_eval(x, dy, ctx.weight, rm, rv, ctx.eps, ctx.fa) if tracked
           else oracle.grads_train(x, dy, ctx.weight, ctx.eps, ctx.fa))

    def cmp_fn(model):
        if tracked:
            bounds = tolerance.grads_eval_bound(model, x, dy, ctx.weight, rm, rv, ctx.eps, ctx.fa, u, exp)
        else:
            bounds = tolerance.grads_train_bound(model, x, dy, ctx.weight, ctx.eps, ctx.fa, u, exp)
        return _grad_comparison(ctx, "eval", exp, bounds)
    w = cmp_fn(ctx.model)
    if not w.ok:
        return [numeric_attribution(ctx, "BN-GRAD-EVAL", cmp_fn, w, conditioning=not tracked)]
    return [Outcome("BN-GRAD-EVAL", w.ok, w)]


# ----------------------------------------------------------------------- behaviour
@check("purity", emits=("BN-PURE",))
def purity(ctx: Ctx):
    flags = {k: v for k, v in ctx.trace.items() if k.endswith("/mutated")}
    if not flags:
        return []
    bad = sorted(k.split("/")[0] for k, v in flags.items() if v)
    return [Outcome("BN-PURE", not bad, note=f"inputs mutated by the call in {bad}" if bad else "")]


@check("output_dtype", emits=("BN-DTYPE-OUTPUT",))
def output_dtype(ctx: Ctx):
    outs, measured = [], {}
    for k in [f"train_{i}" for i in range(ctx.case.steps)] + ["eval"]:
        if f"{k}/y" not in ctx.trace:
            continue
        dt, shape = ctx.trace[f"{k}/y_dtype"], np.shape(ctx.trace[f"{k}/y"])
        if dt != ctx.case.dtype or shape != ctx.case.shape:
            outs.append(f"{k}: {dt}{list(shape)} for a {ctx.case.dtype}{list(ctx.case.shape)} input")
            # the kind of deviation (what a known entry matches) must not depend on the case's shape
            measured.setdefault("output_dtype", dt if dt != ctx.case.dtype else "same")
            if shape != ctx.case.shape:
                measured.setdefault("output_shape", "other")
    if not any(f"{k}/y" in ctx.trace for k in ["train_0", "eval"]):
        return []
    return [Outcome("BN-DTYPE-OUTPUT", not outs, note="; ".join(outs), measured=measured)]


def _train_error(ctx):
    """The trace's error unless it is an eval mode the implementation does not have (a stateless
    op): these clauses judge the training step, which ran."""
    err = ctx.trace.get("error")
    if err and err["unsupported"] and err["phase"].startswith("eval"):
        return None
    return err


# The process running the implementation died or hung: never the clear error a profile expects
# (an implementation that segfaults on one value per channel does not "raise").
NOT_RAISED = ("ProcessDied", "CallTimeout")


def _died(err, clause):
    if err and err["type"] in NOT_RAISED:
        return [Outcome(clause, False, note=f"{err['type']} in {err['phase']}: {err['message'][:300]}")]
    return None


@check("one_value", emits=("BN-ONE-VALUE",))
def one_value(ctx: Ctx):
    case = ctx.case
    if case.n_per_channel != 1 or case.shape[0] == 0 or case.special in ("nan", "inf"):
        return []
    err = _train_error(ctx)
    if err and err["unsupported"]:
        return []
    died = _died(err, "BN-ONE-VALUE")
    if died:
        return died
    want = ctx.profile.one_value_per_channel
    raised = err is not None and err["phase"] == "train_0"
    if want == "raises":
        ok = raised
        return [Outcome("BN-ONE-VALUE", ok, note=(f"raised {err['type']}: {err['message'][:200]}" if raised else
                                                 "returned instead of raising"), measured={
            "one_value_per_channel": "raises" if raised else _one_value_kind(ctx)})]
    if raised:
        return [Outcome("BN-ONE-VALUE", False, note=f"raised {err['type']}: {err['message'][:200]}",
                        measured={"one_value_per_channel": "raises"})]
    kind = _one_value_kind(ctx)
    y = ctx.trace.get("train_0/y")
    # beta under the spec's forward conventions; under a variant (a root's measured convention,
    # blocking.py) whatever that convention gives, NaN for eps absent included
    exp = oracle.train_forward(ctx.arrays["x_train_0"], ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
    u = ctx.u_out(ctx.trace.get("train_0/y_dtype", case.dtype))
    bound = tolerance.y_train_bound(ctx.model, ctx.arrays["x_train_0"], ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, exp)
    cmp = compare(y, exp, bound, "training output with n = 1", key="train_0/y")
    stats_ok = all(np.all(np.isfinite(ctx.trace[k])) for k in ctx.trace if k.startswith("train_0/running"))
    ok = cmp.ok and stats_ok
    return [Outcome("BN-ONE-VALUE", ok, cmp, "" if stats_ok else "non-finite running statistics",
                    {"one_value_per_channel": kind})]


def _one_value_kind(ctx):
    y = ctx.trace.get("train_0/y")
    if y is None:
        return "other"
    y = np.asarray(y, np.float64)
    if not np.all(np.isfinite(y)):
        return "non_finite"
    beta = np.zeros(ctx.case.num_features) if ctx.bias is None else np.asarray(ctx.bias, np.float64)
    exp = np.broadcast_to(oracle._per_feature(beta, ctx.case.rank, ctx.fa), ctx.case.shape)
    return "returns_beta" if np.allclose(y, exp, rtol=1e-2, atol=1e-3) else "other"


@check("empty_batch", emits=("BN-EMPTY-BATCH",))
def empty_batch(ctx: Ctx):
    if ctx.case.shape[0] != 0:
        return []
    err = _train_error(ctx)
    if err and err["unsupported"]:
        return []
    died = _died(err, "BN-EMPTY-BATCH")
    if died:
        return died
    if err:
        ok = bool(err["message"].strip())
        return [Outcome("BN-EMPTY-BATCH", ok, note=f"raised {err['type']}: {err['message'][:200]}")]
    y = ctx.trace.get("train_0/y")
    shape_ok = y is not None and np.shape(y) == ctx.case.shape
    stats_ok = all(np.all(np.isfinite(v)) for k, v in ctx.trace.items() if "/running_" in k)
    note = [] if shape_ok else [f"output shape {np.shape(y)} for input {ctx.case.shape}"]
    if not stats_ok:
        note.append("non-finite running statistics after an empty batch")
    return [Outcome("BN-EMPTY-BATCH", shape_ok and stats_ok, note="; ".join(note))]


# ------------------------------------------------------------------- relation checks
def relation_inputs(case: Case, arrays: dict) -> list:
    """The extra calls the relation checks need: (name, mode, x, overrides-or-None). Keys starting
    with "_" are for the checks (the permutation, the scale), never passed to the adapter."""
    if case.n_per_channel < 2 or case.special != "none" or case.shape[0] == 0:
        return []
    x = arrays["x_train_0"]
    rng = np.random.default_rng(case.seed + 1)
    extra = []
    moved = np.moveaxis(x, case.feature_axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    perm = rng.permutation(flat.shape[0])
    xp = np.moveaxis(flat[perm].reshape(moved.shape), -1, case.feature_axis)
    extra.append(("perm", "train", np.ascontiguousarray(xp), {"_perm": perm}))
    if case.num_features > 1:
        xc = x.copy()
        idx = [slice(None)] * x.ndim
        idx[case.feature_axis] = 0
        xc[tuple(idx)] = xc[tuple(idx)][::-1] * 2 if xc[tuple(idx)].ndim else xc[tuple(idx)] * 2
        extra.append(("chan", "train", xc, None))
    extra.append(("shift", "train", _shifted(case, x), None))
    if case.eps != "default":
        a = 2.0 ** (4 if rng.random() < 0.5 else -4)
        xs = cast(x.astype(np.float64) * a, case.dtype)
        extra.append(("scale", "train", xs, {"eps": float(case.eps) * a * a, "_scale": a}))
    return extra


def _shifted(case: Case, x):
    """x + c_k, one constant per channel (BN-SHIFT-INVARIANCE holds per channel), sized by the
    channel's own std so that the shifted channel's |mean|/std grows by 10 + 10 kappa but stays
    inside the error model's validity range (u kappa <= tolerance.VALID_U_KAPPA): a shift sized
    by the whole array's std (between-channel spread included) reached |mean|/std ~ 1e7 in
    float32, where the first-order bound no longer holds and a correct kernel "failed"."""
    from bnconf.cases.strategies import DTYPE_MAX_ABS
    xd = x.astype(np.float64)
    axes = oracle.reduce_axes(x.ndim, case.feature_axis)
    mean, std = xd.mean(axis=axes, keepdims=True), xd.std(axis=axes, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    kappa = np.abs(mean) / std
    room_kappa = tolerance.VALID_U_KAPPA / tolerance.unit_roundoff(case.dtype) - kappa
    grow = np.clip(np.minimum(10.0 + 10.0 * case.kappa, room_kappa), 0.0, None)
    room_abs = DTYPE_MAX_ABS[case.dtype] / 2 - np.max(np.abs(xd), axis=axes, keepdims=True)
    shift = np.where(mean < 0, -1.0, 1.0) * np.clip(np.minimum(grow * std, room_abs), 0.0, None)
    return cast(xd + cast(shift, case.dtype).astype(np.float64), case.dtype)


@check("axes_relation", emits=("BN-AXES", *NUMERIC))
def axes_relation(ctx: Ctx):
    """BN-AXES without any convention: permuting positions along the reduced axes permutes
    the output, and changing one channel leaves the other channels' outputs alone."""
    t, case = ctx.trace, ctx.case
    raised = _relation_raised(ctx, "BN-AXES", ("perm", "chan"))
    if raised is not None:
        return [raised]
    if "extra/perm/y" not in t or "train_0/y" not in t or not ctx.standard_forward():
        return []
    x = ctx.arrays["x_train_0"]
    y0 = np.asarray(t["train_0/y"], np.float64)
    if y0.shape != x.shape:
        return []
    perm = ctx.relations["perm"][1]["_perm"]
    moved = np.moveaxis(y0, case.feature_axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    y_perm_exp = np.moveaxis(flat[perm].reshape(moved.shape), -1, case.feature_axis)
    y_exp = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
    keep = np.ones(case.num_features, bool)
    keep[0] = False
    mask = np.broadcast_to(keep.reshape([-1 if a == ctx.fa else 1 for a in range(y0.ndim)]), y0.shape)

    def cmp_fn(model):
        bound = 2 * tolerance.y_train_bound(model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa,
                                            ctx.u_out(t["train_0/y_dtype"]), y_exp)
        bm = np.moveaxis(bound, case.feature_axis, -1).reshape(-1, bound.shape[case.feature_axis])[perm]
        bound_p = np.moveaxis(bm.reshape(moved.shape), -1, case.feature_axis)
        cmps = [compare(t["extra/perm/y"], y_perm_exp, bound_p, "output of the permuted input vs permuted output",
                        key="extra/perm/y")]
        if "extra/chan/y" in t:
            yc = np.asarray(t["extra/chan/y"], np.float64)
            if yc.shape == y0.shape:
                cmps.append(compare(np.where(mask, yc, 0), np.where(mask, y0, 0), np.where(mask, bound, np.inf),
                                    "other channels' output after changing channel 0", key="extra/chan/y"))
        return _worst(cmps)
    w = cmp_fn(ctx.model)
    if not w.ok:
        o = numeric_attribution(ctx, "BN-AXES", cmp_fn, w)
        if o.clause == "BN-AXES":
            o.measured = {"reduction": "other"}
        return [o]
    return [Outcome("BN-AXES", w.ok, w, measured={} if w.ok else {"reduction": "other"})]


@check("shift_invariance", emits=("BN-SHIFT-INVARIANCE", *NUMERIC))
def shift_invariance(ctx: Ctx):
    t = ctx.trace
    raised = _relation_raised(ctx, "BN-SHIFT-INVARIANCE", ("shift",))
    if raised is not None:
        return [raised]
    if "extra/shift/y" not in t or "train_0/y" not in t or not ctx.standard_forward():
        return []
    x = ctx.arrays["x_train_0"]
    xs = ctx.relations["shift"][0]
    y_exp = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
    ys_exp = oracle.train_forward(xs, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
    u = ctx.u_out(t["train_0/y_dtype"])
    ys = np.asarray(t["extra/shift/y"], np.float64)

    def cmp_fn(model):
        bound = (tolerance.y_train_bound(model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, y_exp)
                 + tolerance.y_train_bound(model, xs, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, ys_exp)
                 + np.abs(ys_exp - y_exp))  # the shifted input was rounded to the dtype
        return compare(ys, t["train_0/y"], bound, "y(x + c) vs y(x)", key="extra/shift/y")
    cmp = cmp_fn(ctx.model)
    if not cmp.ok:
        own = _shift_conditioning(ctx, xs, ys, ys_exp, y_exp, u)
        if own is not None:
            return [own]
        return [numeric_attribution(ctx, "BN-SHIFT-INVARIANCE", cmp_fn, cmp, conditioning=False)]
    return [Outcome("BN-SHIFT-INVARIANCE", cmp.ok, cmp)]


def _shift_conditioning(ctx, xs, ys, ys_exp, y_exp, u):
    """The shift made the input ill-conditioned and the shifted output itself leaves the model
    while the unshifted one is within it: the variance algorithm loses precision with
    |mean|/std (BN-VAR-STABLE, with the unshifted case as the centred evidence), not a lack
    of invariance of its own."""
    from bnconf.cases.case import channel_kappa
    kappa = float(np.max(channel_kappa(xs, ctx.fa))) if np.size(xs) else 0.0
    if kappa < ctx.kappa_thr or "BN-VAR-STABLE" not in ctx.applicable or ctx.case.dtype not in ("float32", "float64"):
        return None
    own = compare(ys, ys_exp, tolerance.y_train_bound(ctx.model, xs, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, ys_exp),
                  "output of the shifted input vs the oracle", key="extra/shift/y")
    x = ctx.arrays["x_train_0"]
    base = compare(ctx.trace["train_0/y"], y_exp,
                   tolerance.y_train_bound(ctx.model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, y_exp))
    if own.ok or not base.ok:
        return None
    return Outcome("BN-VAR-STABLE", False, own, f"the input shifted to |mean|/std = {kappa:.3g} is normalized outside "
                   "the model while the unshifted input is within it", {"variance_algorithm": "one_pass"})


@check("scale_invariance", emits=("BN-SCALE-INVARIANCE", *NUMERIC))
def scale_invariance(ctx: Ctx):
    t = ctx.trace
    raised = _relation_raised(ctx, "BN-SCALE-INVARIANCE", ("scale",))
    if raised is not None:
        return [raised]
    if "extra/scale/y" not in t or "train_0/y" not in t or not ctx.standard_forward():
        return []
    x = ctx.arrays["x_train_0"]
    xs, over = ctx.relations["scale"]
    eps_s = over["eps"]
    u = ctx.u_out(t["train_0/y_dtype"])
    y_exp = oracle.train_forward(x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, ctx.profile)[0]
    ys_exp = oracle.train_forward(xs, ctx.weight, ctx.bias, eps_s, ctx.fa, ctx.profile)[0]
    def cmp_fn(model):
        bound = (tolerance.y_train_bound(model, x, ctx.weight, ctx.bias, ctx.eps, ctx.fa, u, y_exp)
                 + tolerance.y_train_bound(model, xs, ctx.weight, ctx.bias, eps_s, ctx.fa, u, ys_exp)
                 + np.abs(ys_exp - y_exp))  # nonzero only if the scaled input under/overflowed
        return compare(t["extra/scale/y"], t["train_0/y"], bound,
                       f"y(a x; a^2 eps) vs y(x; eps), a = {over['_scale']:g}", key="extra/scale/y")
    cmp = cmp_fn(ctx.model)
    if not cmp.ok:
        def expect(profile):  # does the convention predict the scaled output itself?
            pred = oracle.train_forward(xs, ctx.weight, ctx.bias, eps_s, ctx.fa, profile)[0]
            return pred, tolerance.y_train_bound(ctx.model, xs, ctx.weight, ctx.bias, eps_s, ctx.fa, u, pred,
                                                 _placement(ctx, profile))

        def cmp_under(profile):
            return compare(t["extra/scale/y"], *expect(profile))
        conv = convention_attribution(ctx, cmp, cmp_under, expect)
        if conv is not None:
            return [conv]
        return [numeric_attribution(ctx, "BN-SCALE-INVARIANCE", cmp_fn, cmp, conditioning=False)]
    return [Outcome("BN-SCALE-INVARIANCE", cmp.ok, cmp)]


@check("fold", emits=("BN-FOLD", *NUMERIC))
def fold(ctx: Ctx):
    """BN-FOLD: the eval map is the per-feature affine map a x + b with a and b folded from
    the reported statistics; checked on 2x and 0, where a non-affine map shows."""
    t = ctx.trace
    if not _eval_tracked(ctx):
        return []
    raised = _relation_raised(ctx, "BN-FOLD", ("double", "zero"))
    if raised is not None:
        return [raised]
    if "post/double/y" not in t or "post/zero/y" not in t:
        return []
    rm, rv = _stats_before_eval(ctx)
    if rm is None:
        return []
    x = ctx.arrays["x_eval"].astype(np.float64)
    g = np.ones(ctx.case.num_features) if ctx.weight is None else np.asarray(ctx.weight, np.float64)
    b = np.zeros(ctx.case.num_features) if ctx.bias is None else np.asarray(ctx.bias, np.float64)

    def expected(profile, model=None):
        """name -> (expected, bound) for the doubled and the zero input."""
        rvv = np.asarray(rv, np.float64)
        with np.errstate(all="ignore"):
            a = oracle.normalize(np.ones_like(rvv), 0.0, rvv, ctx.eps, None, None, 0, profile.eps_placement)
        a = g * a
        A = oracle._per_feature(a, x.ndim, ctx.fa)
        B = oracle._per_feature(b - a * np.asarray(rm, np.float64), x.ndim, ctx.fa)
        out = {}
        for name, xx in (("double", 2 * x), ("zero", 0 * x)):
            exp = tolerance.in_dtype_range(A * xx + B, t["eval/y_dtype"])
            out[name] = exp, tolerance.y_eval_bound(model or ctx.model, xx, ctx.weight, ctx.bias, rm, rv, ctx.eps,
                                                    ctx.fa, ctx.u_out(t["eval/y_dtype"]), exp,
                                                    _placement(ctx, profile))
        return out

    def expect(profile):
        e = expected(profile)
        return (np.concatenate([e[k][0].reshape(-1) for k in e]), np.concatenate([e[k][1].reshape(-1) for k in e]))

    def cmp_under(profile, model=None):
        return _worst([compare(t[f"post/{name}/y"], exp, bound, f"eval of {name} input vs folded affine map",
                               key=f"post/{name}/y") for name, (exp, bound) in expected(profile, model).items()])

    def cmp_fn(model):
        return cmp_under(ctx.eff, model)
    w = cmp_fn(ctx.model)
    if not w.ok:
        conv = convention_attribution(ctx, w, cmp_under, expect)
        if conv is not None:
            return [conv]
        return [numeric_attribution(ctx, "BN-FOLD", cmp_fn, w, conditioning=False)]
    return [Outcome("BN-FOLD", w.ok, w)]


def post_eval_inputs(case: Case, arrays: dict) -> list:
    if case.special != "none" or case.shape[0] == 0:
        return []
    from bnconf.cases.case import cast
    x = arrays["x_eval"]
    return [("double", cast(x.astype(np.float64) * 2, case.dtype)), ("zero", cast(x * 0, case.dtype))]


def run_checks(ctx: Ctx, emitted: dict | None = None) -> list[Outcome]:
    """Every distinct check once; outcomes only for clauses that apply to the profile.
    `emitted` (check function name -> clause IDs) collects what each check really emitted,
    before the profile's filter: the lint holds the spec and EMITS to it."""
    err = ctx.trace.get("error")
    if err and err["phase"] == "build":
        if err["unsupported"]:
            return []
        return [Outcome("BN-NORMALIZE", False, note=f"building the layer raised {err['type']}: {err['message']}")]
    seen, out = set(), []
    for fn in CHECKS.values():
        if fn in seen:
            continue
        seen.add(fn)
        try:
            res = fn(ctx)
        except Exception as exc:  # a bug in a check must not hide the others: every clause it judges is an error
            tb = traceback.format_exc()
            res = [Outcome(c, False, note=f"check {fn.__name__} crashed: {type(exc).__name__}: {exc}", error=tb)
                   for c in EMITS.get(fn.__name__, ())]
        if emitted is not None:
            emitted.setdefault(fn.__name__, set()).update(o.clause for o in res if o.error is None)
        out.extend(o for o in res if o.clause in ctx.applicable)
        measured = {k: v for o in res if not o.ok for k, v in o.measured.items() if k in ctx.profile.conventions
                    and v in ctx.spec.conventions[k]["values"]}
        if measured:
            ctx.eff = ctx.eff.with_convention(**measured)
    return out

"""Attribution: when a quantity deviates, which clause the deviation belongs to.

If flipping exactly one convention field of the profile makes the oracle match, the failure
belongs to the clause that pins that field, and the measured convention is recorded. A
deviation that a precision or conditioning explains is charged there (BN-DTYPE-F64,
BN-DTYPE-ACCUM, BN-VAR-STABLE), asked by re-running the implementation on a variant of the
case (ctx.rerun). Otherwise it stays with the quantity's own clause. A match is evidence only
where the alternatives are distinguishable beyond rounding (DISTINCT).
"""
from __future__ import annotations

import numpy as np

from bnconf.cases.case import centred, channel_kappa
from bnconf.checks.context import Outcome, _masked, _placement
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare
from bnconf.reference.conventions import ATTRIBUTION_ONLY, FLIPS

DISTINCT = 4.0


def _kappas(ctx):
    """|mean|/std of every channel of the training batches; a NaN/Inf channel is left out, and a
    constant channel is infinitely ill-conditioned unless its value is 0 (channel_kappa says so)."""
    keep = np.ones(ctx.case.num_features, bool)
    if ctx.case.special in ("nan", "inf"):
        keep[ctx.case.special_channel % ctx.case.num_features] = False
    ks = [channel_kappa(ctx.arrays[f"x_train_{k}"], ctx.fa)[keep] for k in range(ctx.case.steps)]
    return np.concatenate(ks) if ks else np.zeros(1)


def _flips(ctx, fld):
    low = ctx.case.dtype not in ("float32", "float64")
    return [v for v in FLIPS[fld] if v != ctx.profile.conventions[fld] and not (low and v in ATTRIBUTION_ONLY)]


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


def _float32_sized_when_centred(ctx, clause, key: str) -> bool:
    """float32 arithmetic in a float64 kernel is off by at most about u32/u64 times the float64
    bound wherever the float32 model holds; an ill-conditioned case's wide float32 bound can
    swallow a systematic error (tf.nn.moments' stop_gradient in a second derivative), but the same
    case centred shows it at many times that: then float32 is no explanation."""
    ks = _kappas(ctx)
    if not ks.size or float(np.max(ks)) < ctx.kappa_thr or ctx.rerun is None:
        return True
    try:
        outs = ctx.rerun(centred(ctx.case))
    except Exception:
        return True
    worst = max((o.comparison.ratio for o in outs if not o.ok and o.comparison is not None
                 and (o.clause == clause or o.comparison.key == key)), default=0.0)
    return not worst > 10 * tolerance.unit_roundoff("float32") / tolerance.unit_roundoff("float64")


def _holds_centred(ctx, clause, key: str = "") -> bool:
    """On an ill-conditioned case a one-pass variance error can mimic any variance-scaling
    convention by chance (Keras[torch] float16 at |mean|/std = 1000 "matched" eps outside the
    sqrt): a convention does not depend on conditioning, so the same case centred must fail
    the same clause too."""
    ks = _kappas(ctx)
    if not ks.size or float(np.max(ks)) < ctx.kappa_thr or ctx.rerun is None:
        return True
    return not _passes(ctx, centred(ctx.case), clause, key)


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
    if exact_centred and float(np.max(_kappas(ctx), initial=0.0)) >= ctx.kappa_thr:
        # no centred evidence, and ill-conditioning alone puts a wrong result (a missing term:
        # 0 for 1e-5) inside the float32 bound: nothing positive says float32 arithmetic
        return None
    if not (alt is not None and alt.ok and _passes(ctx, case.replace(dtype="float32"), clause, base.key)
            and (exact_centred or _holds_centred(ctx, clause, base.key))):
        return None
    if not exact_centred and not _float32_sized_when_centred(ctx, clause, base.key):
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
    if "init/weight" in ctx.trace:
        # the layer's own gamma and beta were read (running/trace.py) and BN-INIT judged them:
        # inferring them from the output would mistake a uniform variance error (n - 1 for n,
        # sqrt((n-1)/n) in every channel) for an initialiser
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

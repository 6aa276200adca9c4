"""The training-mode output: y against the oracle under the profile (BN-NORMALIZE and the
conventions it depends on), and the per-channel mean of y, which no variance convention
changes (BN-MEAN). A deviation of y is attributed in a fixed order: a convention flip, the
feature axis, the ignored affine, the eps value, precision and conditioning, the initial
gamma and beta, then the case's special channel."""
from __future__ import annotations

import numpy as np

from bnconf.checks.attribution import (_distinguishable, _feature_axis_used, _flips, _holds_centred,
                                       _init_attribution, _kappas, _passes, case_affine_ignored,
                                       numeric_attribution)
from bnconf.checks.context import Ctx, Outcome, _failed_call, _masked, _placement, _trainable_case, _worst
from bnconf.checks.registry import NUMERIC, check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare
from bnconf.reference.conventions import ATTRIBUTION_ONLY, EPS_CANDIDATES, EPS_FACTORS


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


@check("y_train", "y_train_affine_off", "y_train_low_precision", "y_train_f64", "y_train_ill_conditioned",
       "default_eps", "constant_channel", "nonfinite_confined",
       emits=("BN-NORMALIZE", "BN-VAR-BIASED", "BN-EPS-INSIDE", "BN-AFFINE", "BN-AFFINE-OFF", "BN-DTYPE-ACCUM",
              "BN-DTYPE-F64", "BN-VAR-STABLE", "BN-DEFAULT-EPS", "BN-CONSTANT-CHANNEL", "BN-NONFINITE-CONFINED",
              "BN-AXES", "BN-INIT"))
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

"""Relations that hold whatever the conventions: permuting positions or changing another channel
(BN-AXES), shifting each channel (BN-SHIFT-INVARIANCE), scaling x by a with eps by a^2
(BN-SCALE-INVARIANCE), and the eval map being the affine map folded from the running
statistics (BN-FOLD). The engine makes the extra calls these need (relation_inputs,
post_eval_inputs) and hands them to the checks as ctx.relations and the trace's extra/ and
post/ entries."""
from __future__ import annotations

import numpy as np

from bnconf.cases.case import Case, cast, channel_kappa
from bnconf.cases.strategies import DTYPE_MAX_ABS
from bnconf.checks.attribution import convention_attribution, numeric_attribution
from bnconf.checks.context import Ctx, Outcome, _eval_tracked, _placement, _stats_before_eval, _worst, raised_text
from bnconf.checks.registry import NUMERIC, check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare


def _relation_raised(ctx, clause, names):
    """A relation or post-eval call the implementation raised on is its failure on a valid
    input, judged under the clause that made the call (not a silent 'not run')."""
    for name in names:
        err = ctx.trace.get(f"extra/{name}/error")
        if err is None and str((ctx.trace.get("error") or {}).get("phase", "")).startswith(f"post/{name}"):
            err = ctx.trace["error"]
        if err is not None and not err["unsupported"]:
            return Outcome(clause, False, note=f"{err['type']} on the {name} input ({err['phase']}): "
                                               f"{err['message'][:300]}", raised=raised_text(err))
    return None


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
    by the whole array's std (between-channel spread included) can reach |mean|/std ~ 1e7 in
    float32, where the first-order bound no longer holds and a correct kernel would "fail"."""
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
    x = arrays["x_eval"]
    return [("double", cast(x.astype(np.float64) * 2, case.dtype)), ("zero", cast(x * 0, case.dtype))]

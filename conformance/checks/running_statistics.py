"""The running statistics a training step leaves: the update under the profile's momentum
form (BN-MOMENTUM-BATCH-WEIGHT, BN-MOMENTUM-OLD-WEIGHT, BN-MOMENTUM-CUMULATIVE,
BN-MOMENTUM-DEBIASED, BN-DEFAULT-MOMENTUM) and running-variance estimator
(BN-RUNVAR-UNBIASED, BN-RUNVAR-BIASED), the initial state (BN-INIT) and the step counter
(BN-NUM-BATCHES-TRACKED)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from bnconf.checks.attribution import DISTINCT, _flips, _holds_centred, numeric_attribution
from bnconf.checks.context import Ctx, Outcome, _trainable_case, _worst
from bnconf.checks.registry import NUMERIC, check
from bnconf.reference import error_model as tolerance
from bnconf.reference import oracle
from bnconf.reference.comparison import compare
from bnconf.reference.conventions import ATTRIBUTION_ONLY, FLIPS, MOMENTUM_CANDIDATES


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
    out = []
    if "init/weight" in ctx.trace:   # read from the layer itself (running/trace.py)
        c = ctx.case.num_features
        act = np.concatenate([ctx.trace["init/weight"], ctx.trace["init/bias"]])
        cmp = compare(act, np.concatenate([np.ones(c), np.zeros(c)]), 0.0, "initial gamma then beta",
                      key="init/weight+bias")
        out.append(Outcome("BN-INIT", cmp.ok, cmp, "" if cmp.ok else "gamma and beta do not start at 1 and 0"))
    if "init/running_mean" not in ctx.trace or not ctx.case.track_running_stats:
        return out
    init = ctx.profile.initial
    c = ctx.case.num_features
    exp = np.concatenate([np.full(c, init["running_mean"]), np.full(c, init["running_var"])])
    act = np.concatenate([ctx.trace["init/running_mean"], ctx.trace["init/running_var"]])
    cmp = compare(act, exp, 0.0, "initial running mean then running var", key="init/running_mean+var")
    return out + [Outcome("BN-INIT", cmp.ok, cmp, "" if cmp.ok else "the running statistics do not start at the "
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

"""The porting guide: what moving a BN layer between two profiles' frameworks changes, derived
from the profiles alone (spec/batchnorm.yaml), in two cases that need different rules.

* Copying a trained layer's weights for inference. Every profile normalizes eval with the
  stored running variance as it is (BN-EVAL-RUNNING), whatever estimator fed it, so the stored
  statistics are copied unchanged; rescaling them by (n-1)/n changes every output. Only eps
  must be carried over by value, since the two frameworks' defaults differ.
* Continuing training in the target. Then the target's own conventions decide every later
  update: the momentum must be translated into its form, and the running-variance estimator
  changes what is folded in from then on; no conversion of the stored value can undo that.

`weights` is machine-readable ({"running_mean": "copy", "running_var": "copy", "eps": value
rule}) so that a test can port a trained layer with the guide's own rules and compare outputs
(tests/test_porting_guide.py).
"""
from __future__ import annotations


def _momentum(a, b, ma, mb) -> str:
    if ma == mb:
        return "same momentum value"
    if {ma, mb} == {"batch_weight", "old_weight"}:
        return f"momentum_{b} = 1 - momentum_{a}"
    if "debiased_ema" in (ma, mb):
        same = "batch_weight" not in (ma, mb)
        return (f"decay = {'momentum' if same else '1 - momentum'}; the debiased EMA (starting from zero, divided "
                "by 1 - decay^t) has no exact equivalent in the other form early in training")
    return "no direct equivalent"


def _running_variance_training(a, b, ra, rb) -> str:
    if ra == rb:
        return f"same estimator ({ra})"
    if ra == "unbiased" and rb == "biased":
        return (f"{b} folds in the biased batch variance from then on: its running variance drifts towards "
                f"(n-1)/n of what {a} would have stored (n: values per channel per batch; small for large n)")
    if ra == "biased" and rb == "unbiased":
        return (f"{b} folds in the unbiased batch variance from then on: n/(n-1) of what {a} would have stored")
    return "n/a"


def porting_guide(spec) -> list[dict]:
    """One entry per ordered pair of profiles that keep running statistics."""
    out = []
    names = [n for n, p in spec.profiles.items() if p.momentum_form != "none"]
    for a in names:
        for b in names:
            if a == b:
                continue
            pa, pb = spec.profiles[a], spec.profiles[b]
            ma, mb = pa.momentum_form, pb.momentum_form
            eps = ("same default eps" if pa.default_eps == pb.default_eps else
                   f"set eps explicitly: {a} default {pa.default_eps}, {b} default {pb.default_eps}")
            default_m = (f"{a} default {pa.default_momentum} -> {b}: "
                         + (f"{1 - pa.default_momentum:g}" if {ma, mb} == {"batch_weight", "old_weight"}
                            and pa.default_momentum is not None else f"{pa.default_momentum}"))
            out.append({
                "from": a, "to": b,
                "weights": {"running_mean": "copy", "running_var": "copy", "eps": "the source's value"},
                "weights_text": (f"copy running mean and variance as they are ({b} normalizes eval with the "
                                 f"stored variance, as {a} does); carry eps over by value"),
                "momentum": _momentum(a, b, ma, mb), "default_momentum": default_m, "eps": eps,
                "running_variance": _running_variance_training(a, b, pa.running_variance, pb.running_variance),
            })
    return out

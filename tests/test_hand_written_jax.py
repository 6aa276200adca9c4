"""Hand-written BN functions on JAX arrays (`--kind jax-function`), audited as their authors
call them; verdicts and violated clauses stated before any run (tests/specimens/jax_style.py)."""
from pathlib import Path

import pytest

import bnconf
from bnconf.cases import layouts

pytest.importorskip("jax")
SPECIMENS = Path(__file__).parent / "specimens" / "jax_style.py"

# (name, profile, options, verdict, violated clauses, scope layouts)
CASES = [
    ("batch_norm", "flax", {}, "conforms", set(), tuple(layouts.LAYOUTS)),
    ("batch_norm_stats_not_updated_in_eval_but_batch_used", "flax", {}, "violates", {"BN-EVAL-RUNNING"},
     tuple(layouts.LAYOUTS)),
    # no running statistics, a custom_vjp backward, (N, D) refused otherwise
    ("custom_vjp_2d", "stax", {"call": "custom_vjp_2d(x, weight, bias, training=training, eps=eps)"},
     "conforms", set(), ("NC",)),
    # cannot run under jax.jit or jax.vjp: said so, under the training transform alone
    ("branches_on_values", "flax", {}, "violates", {"BN-NORMALIZE"}, tuple(layouts.LAYOUTS)),
]


@pytest.mark.clause("BN-NORMALIZE", "BN-EVAL-RUNNING", "BN-GRAD-TRAIN")
@pytest.mark.parametrize("name, profile, options, verdict, violated, scope", CASES, ids=[c[0] for c in CASES])
def test_jax_specimens(assert_verdict, name, profile, options, verdict, violated, scope):
    rep = bnconf.audit(f"{SPECIMENS}:{name}", profile, kind="jax-function", quota=20, seed=0, fingerprint=False,
                       shrink_budget=3, **options)
    assert_verdict(rep, verdict, violated, scope)
    if name == "branches_on_values":
        assert "cannot be traced by JAX" in rep.violations[0]["message"], rep.violations[0]


def test_gradients_come_from_the_users_own_backward():
    """The custom_vjp's backward is what BN-GRAD-TRAIN judges: it passed above on cases with
    gradients (not 'not exercised')."""
    rep = bnconf.audit(f"{SPECIMENS}:custom_vjp_2d", "stax", kind="jax-function", quota=20, seed=0,
                       fingerprint=False, call="custom_vjp_2d(x, weight, bias, training=training, eps=eps)")
    passed = {p["clause"]: p for p in rep.passed}
    assert "BN-GRAD-TRAIN" in passed, rep.not_exercised


def test_a_call_without_training_is_a_usage_error(run_cli):
    out = run_cli("audit", f"{SPECIMENS}:batch_norm", "--profile", "flax", "--kind", "jax-function",
                  "--call", "batch_norm(x, weight, bias, running_mean, running_var, momentum=momentum, eps=eps)")
    assert out.returncode == 2 and "names no training" in out.stderr, out.stderr

"""Hand-written BNs audited as their authors would call them: each specimen's verdict and its
exact set of violated clauses are stated here, before any run (tests/specimens/hand_written.py,
tests/specimens/cs231n_style.py)."""
from pathlib import Path

import pytest

import bnconf
from bnconf.cases import layouts

pytest.importorskip("torch")
SPECIMENS = Path(__file__).parent / "specimens" / "hand_written.py"
CS231N = Path(__file__).parent / "specimens" / "cs231n_style.py"
CS_CALL = "{f}(x, weight, bias, kept(mode='train' if training else 'test', eps=eps, momentum=momentum))"


def cs231n(forward, backward=None, **options):
    """--kind numpy-function options for a CS231n-style forward (and hand-written backward)."""
    return {"kind": "numpy-function", "call": CS_CALL.format(f=forward), "returns": "y, cache",
            "backward": backward and f"{backward}(dy, cache)", **options}


D2L_CALL = "d2l_batch_norm(x, shaped(weight), shaped(bias), shaped(running_mean), shaped(running_var), eps, {m})"

# (name, profile, options, verdict, violated clauses, scope layouts)
CASES = [
    ("refuses_2d", "torch", {}, "conforms", set(), ("NC",)),
    ("unpacks_2d", "torch", {"layouts": ("NC",)}, "conforms", set(), ("NC",)),
    # a correct 2-D BN run on layouts it never refused: its failure is the training transform
    # alone, the rest blocked by it
    ("unpacks_2d", "torch", {}, "violates", {"BN-NORMALIZE"}, tuple(layouts.LAYOUTS)),
    # declared, then refused: judged
    ("refuses_2d", "torch", {"layouts": ("NCHW",)}, "violates", {"BN-NORMALIZE"}, ("NCHW",)),
    ("float32_only_2d", "torch", {}, "conforms", set(), ("NC",)),
    ("d2l_batch_norm", "keras", {"kind": "torch-function", "call": D2L_CALL.format(m="momentum"),
                                 "layouts": ("NC", "NCHW")}, "conforms", set(), ("NC", "NCHW")),
    # the same function under the torch profile, its momentum translated: the running variance
    # it keeps is biased (torch's is unbiased), and one value per channel does not raise
    ("d2l_batch_norm", "torch", {"kind": "torch-function", "call": D2L_CALL.format(m="1 - momentum"),
                                 "layouts": ("NC", "NCHW")}, "violates", {"BN-RUNVAR-UNBIASED", "BN-ONE-VALUE"}, ("NC", "NCHW")),
    # untranslated: Keras-form momentum under a torch API as well
    ("d2l_batch_norm", "torch", {"kind": "torch-function", "call": D2L_CALL.format(m="momentum"),
                                 "layouts": ("NC", "NCHW")}, "violates",
     {"BN-MOMENTUM-BATCH-WEIGHT", "BN-RUNVAR-UNBIASED", "BN-ONE-VALUE"}, ("NC", "NCHW")),
    ("custom_backward", "torch", {"kind": "torch-function"}, "conforms", set(), ("NC",)),
    ("custom_backward_constant_stats", "torch", {"kind": "torch-function"}, "violates", {"BN-GRAD-TRAIN"}, ("NC",)),
    ("D2lStyle", "torch", {"kind": "torch-module", "init": "D2lStyle(num_features, num_dims=rank)"}, "conforms",
     set(), ("NC", "NCHW")),
    ("D2lStyle", "torch", {"kind": "torch-module",
                           "init": "D2lStyle(num_features, num_dims=rank, momentum=momentum, eps=eps)"},
     "conforms", set(), ("NC", "NCHW")),
    # its own random gamma is used for every expectation: only the initialisation is wrong
    ("RandomGamma", "torch", {"kind": "torch-module", "init": "RandomGamma(num_features, num_dims=rank)"},
     "violates", {"BN-INIT"}, ("NC", "NCHW")),
    ("EpsOutside", "torch", {"kind": "torch-module", "init": "EpsOutside(num_features, num_dims=rank)"},
     "violates", {"BN-EPS-INSIDE"}, ("NC", "NCHW")),
    # every layout, its feature axis from `axis`: one finding for one bug
    ("unbiased_normalize", "torch", {"kind": "torch-function"}, "violates", {"BN-VAR-BIASED"},
     tuple(layouts.LAYOUTS)),
    # CS231n's forms (Keras-form momentum, a biased running variance, beta for one value)
    (f"{CS231N}:batchnorm_forward", "keras", cs231n("batchnorm_forward", "batchnorm_backward", layouts=("NC",)),
     "conforms", set(), ("NC",)),
    (f"{CS231N}:batchnorm_forward", "keras", cs231n("batchnorm_forward", "batchnorm_backward_alt", layouts=("NC",)),
     "conforms", set(), ("NC",)),
    (f"{CS231N}:batchnorm_forward", "keras",
     cs231n("batchnorm_forward", "batchnorm_backward_no_var_term", layouts=("NC",)), "violates", {"BN-GRAD-TRAIN"}, ("NC",)),
    (f"{CS231N}:batchnorm_forward_eval_no_eps", "keras",
     cs231n("batchnorm_forward_eval_no_eps", "batchnorm_backward", layouts=("NC",)), "violates", {"BN-EPS-INSIDE"}, ("NC",)),
    (f"{CS231N}:spatial_batchnorm_forward", "keras", cs231n("spatial_batchnorm_forward"), "conforms", set(), ("NCHW",)),
    # undeclared, the 2-D forward unpacks x.shape on every channels-first layout: one exception,
    # one finding (BN-ONE-VALUE's raise of the same is blocked by it)
    (f"{CS231N}:batchnorm_forward", "keras", cs231n("batchnorm_forward"), "violates", {"BN-NORMALIZE"},
     ("NC", "NCL", "NCHW", "NCDHW")),
]


@pytest.mark.clause("BN-NORMALIZE", "BN-RUNVAR-UNBIASED", "BN-MOMENTUM-BATCH-WEIGHT", "BN-GRAD-TRAIN", "BN-INIT")
@pytest.mark.parametrize("name, profile, options, verdict, violated, scope", CASES,
                         ids=[f"{c[0].rpartition(':')[2]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_hand_written_specimens(assert_verdict, name, profile, options, verdict, violated, scope):
    rep = bnconf.audit(name if ":" in name else f"{SPECIMENS}:{name}", profile, quota=20, seed=0, fingerprint=False, shrink_budget=3,
                       **options)
    assert_verdict(rep, verdict, violated, scope)


def test_refused_layouts_are_listed_and_never_shown_as_failing_cases():
    rep = bnconf.audit(f"{SPECIMENS}:refuses_2d", "torch", quota=10, seed=1, fingerprint=False)
    refused = {o["what"] for o in rep.scope["out_of_scope"]}
    assert refused == {f"layout {n}" for n in layouts.LAYOUTS if n != "NC"}, rep.scope
    assert all("(N, D) inputs only" in o["message"] for o in rep.scope["out_of_scope"])
    rep = bnconf.audit(f"{SPECIMENS}:float32_only_2d", "torch", quota=10, seed=1, fingerprint=False)
    assert {"what": "dtype float64", "message": "NotImplementedError: float32 (N, D) inputs only"} \
        in rep.scope["out_of_scope"], rep.scope
    assert rep.scope["dtypes"] == ["float32"]


@pytest.mark.parametrize("option, value, words", [
    ("call", "d2l_batch_norm(x, gamma)", "unknown name(s) gamma"),
    ("call", "d2l_batch_norm(x", "not a Python expression"),
    ("call", "x + 1", "must be a call"),
    ("returns", "y, mean", "unknown item(s) mean"),
])
def test_a_bad_template_is_a_usage_error_naming_it(run_cli, option, value, words):
    out = run_cli("audit", f"{SPECIMENS}:d2l_batch_norm", "--profile", "torch", "--kind", "torch-function",
                  f"--{option}", value)
    assert out.returncode == 2 and words in out.stderr and value in out.stderr, out.stderr


@pytest.mark.parametrize("options, words", [
    ((), "needs --call"),
    (("--call", "batchnorm_forward(x, weight, bias, kept(mode='train'))"), "names no training"),
    (("--call", CS_CALL.format(f="batchnorm_forward"), "--returns", "y, cache", "--backward", "batchnorm_bwd(dy, cache)"),
     "has no function batchnorm_bwd"),
    (("--call", CS_CALL.format(f="batchnorm_forward"), "--backward", "batchnorm_backward(dy, cache)"),
     "unknown name(s) cache"),
    (("--call", CS_CALL.format(f="batchnorm_forward"), "--init", "BatchNorm(num_features)"),
     "--init is for --kind torch-module"),
])
def test_a_numpy_function_without_a_usable_template_is_a_usage_error(run_cli, options, words):
    out = run_cli("audit", f"{CS231N}:batchnorm_forward", "--profile", "keras", "--kind", "numpy-function", *options)
    assert out.returncode == 2 and words in out.stderr, out.stderr


def test_an_unknown_layout_is_a_usage_error(run_cli):
    out = run_cli("audit", f"{SPECIMENS}:refuses_2d", "--profile", "torch", "--layouts", "NC,NWHC")
    assert out.returncode == 2 and "'NWHC' is not a layout" in out.stderr, out.stderr

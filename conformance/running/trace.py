"""Drive one implementation through a case: training steps, then eval. NumPy only and no
bnconf import, so that a reproducer can embed this file and run without the suite."""
import traceback

import numpy as np


def _err(phase, exc):
    tb = traceback.extract_tb(exc.__traceback__)
    last = tb[-1] if tb else None
    return {"phase": phase, "type": type(exc).__name__, "message": str(exc)[:2000],
            "where": f"{last.filename}:{last.lineno}" if last else "",
            "unsupported": type(exc).__name__ == "Unsupported"}


def _copies(params):
    """Every call gets its own arrays (BN-PURE): an implementation that writes into what it was
    given must not change the arrays every later check computes its oracle from."""
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in params.items()}


def _stats(inst, out, prefix):
    st = inst.running_stats()
    if st is not None:
        out[prefix + "running_mean"] = np.asarray(st[0], np.float64).reshape(-1)
        out[prefix + "running_var"] = np.asarray(st[1], np.float64).reshape(-1)
    c = inst.counter()
    if c is not None:
        out[prefix + "counter"] = int(c)


def _forward(inst, x, training, dy, out, prefix, params, given):
    """params: the case's own arrays; given: the copies the implementation was built with."""
    passed = x.copy()
    r = inst.forward(passed, training, None if dy is None else dy.copy())
    out[prefix + "y"] = np.asarray(r["y"])
    out[prefix + "y_dtype"] = r.get("y_dtype", str(np.asarray(r["y"]).dtype))
    for g in ("dx", "dweight", "dbias"):
        if r.get(g) is not None:
            out[prefix + g] = np.asarray(r[g], np.float64)
    mutated = not np.array_equal(passed, x, equal_nan=True) or bool(r.get("mutated"))
    for k in ("weight", "bias"):
        if isinstance(params.get(k), np.ndarray):
            mutated = mutated or not np.array_equal(given[k], params[k], equal_nan=True)
    out[prefix + "mutated"] = bool(mutated)


def _own_initial_affine(inst, params, out):
    """BN-INIT, read directly where the layer exposes its parameters (`initial_affine`): with the
    layer's own initialisation (affine "default"), gamma and beta as built. When they are not 1
    and 0, every fresh instance below is given these same values, so that the clauses judged on
    fresh layers see the audited layer's parameters and not another random draw."""
    if params.get("affine") != "default" or not callable(getattr(inst, "initial_affine", None)):
        return params
    got = inst.initial_affine()
    if got is None:
        return params
    w, b = (np.asarray(a, np.float64).reshape(-1) for a in got)
    out["init/weight"], out["init/bias"] = w, b
    if np.all(w == 1) and np.all(b == 0):
        return params
    dt = np.asarray(got[0]).dtype
    return dict(params, affine="random", weight=w.astype(dt), bias=b.astype(dt))


def _ambient_probes(inst, arrays, out):
    """BN-MODE-SWITCH: the trained layer called in eval, then in training mode, each with the
    framework's gradient recording on and off (`forward_under`); the mode must follow the
    layer's own switch alone. A probe that raises is recorded under its own prefix."""
    # eval with gradients off first: it is the twin of an adapter's main eval under no_grad
    for training, grad in ((False, False), (False, True), (True, True), (True, False)):
        x = arrays["x_train_0" if training else "x_eval"]
        phase = f"mode/{'train' if training else 'eval'}_grad_{'on' if grad else 'off'}/"
        try:
            out[phase + "y"] = np.asarray(inst.forward_under(x.copy(), training, grad)["y"])
            _stats(inst, out, phase)
        except Exception as exc:
            out[phase + "error"] = _err(phase, exc)
            return


def _state_probes(inst, arrays, out):
    """BN-STATE-PERSIST: the trained layer called in eval, saved and loaded the framework's way
    into a fresh one (`reload`), which is called in eval on the same batch; then converted to float64 the framework's way (`to_float64`,
    which reports its parameters' and running statistics' dtypes)."""
    phase = "state/"
    try:
        out[phase + "before_y"] = np.asarray(inst.forward(arrays["x_eval"].copy(), False, None)["y"])
        _stats(inst, out, phase + "before_")
        inst.reload()
        out[phase + "y"] = np.asarray(inst.forward(arrays["x_eval"].copy(), False, None)["y"])
        _stats(inst, out, phase)
        phase = "convert/"
        for k, v in inst.to_float64().items():
            out[phase + k] = str(v)
    except Exception as exc:
        out[phase + "error"] = _err(phase, exc)


# capability -> probe: what each capability lets the trace ask (adapters/_protocol.py)
PROBES = (("ambient_grad_mode", "mode"), ("saved_state", "state"), ("second_grads", "second"),
          ("freeze", "freeze"), ("reset_stats", "reset"), ("mask", "mask"), ("renorm", "renorm"))


def probes_for(caps, fresh=True):
    """The probes an implementation's capabilities allow, in the order the trace runs them; without
    `fresh`, only those on the trained instance (mode, state: BN-STATE-PERSIST judges the dtype
    conversion on every case, which is what blocks a float64 finding it explains)."""
    return tuple(probe for cap, probe in PROBES if getattr(caps, cap, False) and (fresh or probe in ("mode", "state")))


def _fresh_trained(impl, params, arrays, device):
    """A fresh instance after one training step on the first batch: trained statistics that
    differ from the initial ones, for the probes that change the layer (freeze, reset)."""
    inst = impl.build(_copies(params), device)
    inst.forward(arrays["x_train_0"].copy(), True, None)
    return inst


def _second_probe(impl, params, arrays, device, out):
    """BN-GRAD-GRAD: a fresh instance differentiates its training gradient once more."""
    r = impl.build(_copies(params), device).grad_grad(arrays["x_train_0"].copy(), arrays["dy_train"].copy(),
                                                      arrays["v_train"].copy())
    for k in ("ddx", "ddweight", "ddy"):
        if r.get(k) is not None:
            out["second/" + k] = np.asarray(r[k], np.float64)


def _freeze_probe(impl, params, arrays, device, out):
    """BN-FREEZE: trained one step, frozen, then called in training mode on the eval batch."""
    inst = _fresh_trained(impl, params, arrays, device)
    _stats(inst, out, "freeze/before_")
    inst.freeze()
    r = inst.forward(arrays["x_eval"].copy(), True, arrays["dy_eval"].copy())
    out["freeze/y"] = np.asarray(r["y"])
    if r.get("dx") is not None:
        out["freeze/dx"] = np.asarray(r["dx"], np.float64)
    _stats(inst, out, "freeze/")


def _reset_probe(impl, params, arrays, device, out):
    """BN-RESET: trained one step, reset, then called in eval on the eval batch."""
    inst = _fresh_trained(impl, params, arrays, device)
    inst.reset_stats()
    _stats(inst, out, "reset/")
    out["reset/y"] = np.asarray(inst.forward(arrays["x_eval"].copy(), False, None)["y"])


def _mask_probe(impl, params, arrays, device, out):
    """BN-MASK: a fresh instance, one masked training step on the first batch."""
    inst = impl.build(_copies(params), device)
    out["mask/y"] = np.asarray(inst.forward_masked(arrays["x_train_0"].copy(), arrays["mask"].copy(), True)["y"])
    _stats(inst, out, "mask/")


# BN-RENORM's layer: clipping that the generated batches reach on both sides, and a renorm
# momentum whose first step moves the renorm statistics visibly
RENORM = {"rmin": 2.0 / 3.0, "rmax": 1.5, "dmax": 0.5, "momentum": 0.9}


def _renorm_probe(impl, params, arrays, device, out):
    """BN-RENORM: a fresh layer built with batch renormalization (params["renorm"]), two training
    steps (the second one differentiated), then an eval call, all on the case's own batches."""
    inst = impl.build(_copies(dict(params, renorm=dict(RENORM))), device)
    for k, v in RENORM.items():
        out[f"renorm/{k}"] = float(v)
    for k, (x, dy) in enumerate(((arrays["x_train_0"], None), (arrays["x_eval"], arrays["dy_eval"]))):
        pre = f"renorm/step_{k}/"
        r = inst.forward(x.copy(), True, None if dy is None else dy.copy())
        out[pre + "y"] = np.asarray(r["y"])
        if r.get("dx") is not None:
            out[pre + "dx"] = np.asarray(r["dx"], np.float64)
        _stats(inst, out, pre)
        for name, a in zip(("renorm_mean", "renorm_std"), inst.renorm_stats()):
            out[pre + name] = np.asarray(a, np.float64).reshape(-1)
    out["renorm/eval/y"] = np.asarray(inst.forward(arrays["x_eval"].copy(), False, None)["y"])


FRESH_PROBES = {"second": _second_probe, "freeze": _freeze_probe, "reset": _reset_probe, "mask": _mask_probe,
                "renorm": _renorm_probe}


def run_trace(impl, params, arrays, steps, device="cpu", grads=True, extra=(), post=(), probes=()):
    """Returns a flat dict: init/…, train_K/…, eval/…, and `error` if a call raised.

    post: (name, array) eval calls on the trained instance after the main eval.
    probes (probes_for): after those, on the same instance, "mode" (mode/…) and then "state"
    (state/…, convert/…); then, each on a fresh instance, "second", "freeze", "reset", "mask", "renorm",
    each recording `<probe>/error` if it raised.
    extra: (name, mode, array, params) calls made on a fresh instance after the main trace, for the
    relation checks (permuted, shifted, scaled inputs); each gets its own prefix.
    """
    out = {}
    given = _copies(params)
    fresh_params = params
    phase = "build"
    try:
        inst = impl.build(given, device)
        _stats(inst, out, "init/")
        fresh_params = _own_initial_affine(inst, params, out)
        for k in range(steps):
            phase = f"train_{k}"
            dy = arrays["dy_train"] if (grads and k == 0) else None
            _forward(inst, arrays[f"x_train_{k}"], True, dy, out, phase + "/", params, given)
            _stats(inst, out, phase + "/")
        phase = "eval"
        _forward(inst, arrays["x_eval"], False, arrays["dy_eval"] if grads else None, out, "eval/", params, given)
        _stats(inst, out, "eval/")
        for name, x in post:  # more eval calls on the same instance (BN-FOLD)
            phase = f"post/{name}"
            out[phase + "/y"] = np.asarray(inst.forward(x.copy(), False, None)["y"])
        if "mode" in probes:
            _ambient_probes(inst, arrays, out)
        if "state" in probes:
            _state_probes(inst, arrays, out)
    except Exception as exc:  # the implementation's failure is data, never our crash
        out["error"] = _err(phase, exc)
        # the relations still run after a post-eval call raised, and when there is no eval mode
        if not (phase.startswith("post/") or (phase == "eval" and out["error"]["unsupported"])):
            return out
    for probe in probes:
        if probe in FRESH_PROBES and (probe != "mask" or "mask" in arrays):
            try:
                FRESH_PROBES[probe](impl, fresh_params, arrays, device, out)
            except Exception as exc:
                out[probe + "/error"] = _err(probe, exc)
    for name, mode, x, p in extra:
        try:
            if p is not None and p.get("affine") == "default" and fresh_params is not params:
                p = dict(p, affine="random", weight=fresh_params["weight"], bias=fresh_params["bias"])  # as above
            fresh = impl.build(_copies(p if p is not None else fresh_params), device)
            if mode == "eval_after_train":
                fresh.forward(arrays["x_train_0"].copy(), True, None)
                mode = "eval"
            r = fresh.forward(x.copy(), mode == "train", None)
            out[f"extra/{name}/y"] = np.asarray(r["y"])
        except Exception as exc:
            out[f"extra/{name}/error"] = _err(f"extra/{name}", exc)
    return out

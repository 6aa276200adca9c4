"""How bnconf calls code written to its own signature (`--call`, `--init`, `--returns`).

A template is one Python call expression naming the target and the case's values, e.g.

    --call "batch_norm(X=x, gamma=shaped(weight), beta=shaped(bias), moving_mean=shaped(running_mean),
                       moving_var=shaped(running_var), eps=eps, momentum=1 - momentum)"
    --init "BatchNorm(num_features, num_dims=rank)"

Which values a template names is what the audit may vary: a function called without `momentum`
keeps its own (the profile's default is then what it is judged by), one called without
`training` must tell the mode from the gradient mode (d2l's `torch.is_grad_enabled()`), so its
eval calls run under `torch.no_grad()`. `--backward` (numpy-function) calls a hand-written backward
pass with dy and what the forward returned (running/numpy_function.py).
"""
from __future__ import annotations

import ast

from bnconf.adapters._protocol import Unsupported
from bnconf.adapters.numpy_protocol import ProtocolError

# what a --call template may name, beside the target and `shaped`
CALL_VALUES = {
    "x": "the input", "weight": "gamma, shape (C,)", "bias": "beta, shape (C,)",
    "running_mean": "the running mean, shape (C,)", "running_var": "the running variance, shape (C,)",
    "training": "True in a training step, False in eval", "momentum": "the case's momentum (the profile's form)",
    "eps": "the case's eps", "axis": "the feature axis", "rank": "x.ndim", "num_features": "C",
}
INIT_VALUES = {k: CALL_VALUES[k] for k in ("num_features", "momentum", "eps", "rank")}
BACKWARD_VALUES = {"dy": "the upstream gradient, x's shape", "x": "the input", "weight": "gamma", "bias": "beta"}
RETURN_NAMES = ("y", "running_mean", "running_var", "cache", "_")
# the template options, in the order every frontend passes them on
TEMPLATE_OPTIONS = ("call", "init", "returns", "backward")
HELPERS = {"shaped": "a per-channel tensor reshaped to broadcast along the feature axis (1, C, 1, 1)",
           "True": "", "False": "", "None": ""}


class TemplateError(ValueError):
    """A template that cannot be used; the message names the template and what is wrong."""


class Template:
    """A parsed call template: `names` are the case values it uses."""

    def __init__(self, text: str, target_name: str, allowed: dict, option: str, helpers=()):
        self.text, self.option, self.helpers = text, option, set(helpers)
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise TemplateError(f"{option} {text!r}: not a Python expression ({exc.msg}, column {exc.offset})") from None
        if not isinstance(tree.body, ast.Call):
            raise TemplateError(f"{option} {text!r}: must be a call, e.g. {target_name}(...)")
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        unknown = sorted(used - set(allowed) - set(HELPERS) - self.helpers - {target_name})
        if unknown:
            raise TemplateError(f"{option} {text!r}: unknown name(s) {', '.join(unknown)}; a template may name "
                                f"{target_name} and " + ", ".join(sorted(set(allowed) | self.helpers | {"shaped"})))
        if target_name not in used:
            raise TemplateError(f"{option} {text!r}: does not call {target_name}")
        self.names = used & set(allowed)
        self.used = used
        self.code = compile(tree, f"<{option} template>", "eval")

    def uses(self, helper: str) -> bool:
        return helper in self.used and helper in self.helpers

    @staticmethod
    def callee(text: str, option: str) -> str:
        """The function a template calls: `batchnorm_backward(dy, cache)` -> 'batchnorm_backward'."""
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise TemplateError(f"{option} {text!r}: not a Python expression ({exc.msg}, column {exc.offset})") from None
        if not (isinstance(tree.body, ast.Call) and isinstance(tree.body.func, ast.Name)):
            raise TemplateError(f"{option} {text!r}: must call a function by its name, e.g. batchnorm_backward(dy, cache)")
        return tree.body.func.id

    def call(self, target_name: str, target, values: dict, shaped=None, **helpers):
        scope = {target_name: target, "shaped": shaped, **helpers, **{k: values.get(k) for k in self.names}}
        return eval(self.code, {"__builtins__": __builtins__}, scope)   # the user's own expression


def call_values(x, weight, bias, running_mean, running_var, training, momentum, eps, axis) -> dict:
    """What a --call template's names stand for (CALL_VALUES), for one call."""
    return {"x": x, "weight": weight, "bias": bias, "running_mean": running_mean, "running_var": running_var,
            "training": training, "momentum": momentum, "eps": eps, "axis": axis, "rank": len(x.shape),
            "num_features": x.shape[axis]}


def require_hyperparameters(params: dict, tmpl, how: str) -> None:
    """A case with its own momentum or eps runs only where the template passes it, a case that
    leaves it to the default only where it does not (Unsupported: the case is not this code's)."""
    names = tmpl.names if tmpl is not None else set()
    for key in ("momentum", "eps"):
        if (params[key] == "default") == (key in names):
            raise Unsupported(f"{how} {'passes' if key in names else 'passes no'} {key}")


def returned(res, returns: tuple | None) -> dict:
    """What a call returned, by name: --returns names a tuple's items; without it a tuple of
    three or more is (y, running_mean, running_var, ...) and anything else is y."""
    items = list(res) if isinstance(res, (tuple, list)) else [res]
    names = returns or (("y", "running_mean", "running_var") if len(items) >= 3 else ("y",))
    if returns and len(items) != len(names):
        raise ProtocolError(f"returned {len(items)} item(s); --returns names {len(names)}")
    return dict(zip(names, items))


def parse_returns(text: str | None) -> tuple | None:
    """'y, running_mean, running_var' -> the names of a returned tuple's items, in order."""
    if not text:
        return None
    names = tuple(t.strip() for t in text.split(","))
    bad = [n for n in names if n not in RETURN_NAMES]
    if bad or "y" not in names:
        raise TemplateError(f"--returns {text!r}: " + (f"unknown item(s) {', '.join(bad)}" if bad else "names no y")
                            + f"; name each returned item as one of {', '.join(RETURN_NAMES)}")
    return names

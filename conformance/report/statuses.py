"""The names report.json and both of its renderings share: the statuses, worst first (a
cell of the matrix shows its worst per-dtype status), with their symbols and colours; the
link form of a clause; the convention columns; the note on reproducers.

"not run" and "unsupported" are never drawn like "fail" (the ONNX scoreboard complaint).
"""
from __future__ import annotations

ORDER = ["fail", "error", "unexpected_pass", "warn", "known", "blocked", "pass", "unsupported", "not_run"]
SYMBOL = {"pass": "pass", "fail": "FAIL", "known": "known", "unexpected_pass": "XPASS", "unsupported": "n/s",
          "error": "ERROR", "not_run": "not run", "warn": "WARN", "blocked": "blocked"}
COLOR = {"pass": "#cfeccf", "fail": "#f4b6b6", "known": "#fde3a7", "unexpected_pass": "#f7c4f0",
         "unsupported": "#e6e6e6", "error": "#e0b0ff", "not_run": "#f5f5f5", "warn": "#fff1b8", "blocked": "#e3e7f5"}
SPEC_LINK = "../spec/SPEC.md#{}"
FP_KEYS = ("momentum_form", "default_momentum", "default_eps", "eps_placement", "normalize_variance",
           "running_variance", "reduction", "one_value_per_channel", "variance_algorithm")
REPRO_NOTE = ("Reproducers are written by the run under repro/ next to this report (reports/repro/) and are "
              "not committed; run a `reproduce` command from this report's folder after `tox` has written it.")


def worst(statuses):
    return min(statuses, key=lambda s: ORDER.index(s) if s in ORDER else 0)


def symbol(status) -> str:
    return SYMBOL.get(status, str(status))

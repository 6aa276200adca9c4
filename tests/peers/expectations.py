"""Peer expectations: other projects' BatchNorm test cases, held as data, replayed on the oracle.

A data file (tests/peers/data/*.json) holds one peer source: the project, the file, the commit
its numbers were read from, and its cases. A case is a sequence of calls to one layer, each
with what the peer's test expects after it, at the peer's own tolerance. The numbers are the
peer's (hard-coded in its test, or what its own reference formula gives on the inputs it
draws); the code that replays them is ours.

Case fields (arrays are nested lists, or {"shape": [...], "data": [flat]} where a shape has a
zero or the nesting would be ambiguous):
  id, test, line           the peer test and the line it asserts at
  profile                  a spec profile whose conventions the peer's layer follows
  feature_axis, eps        as the layer is called
  momentum                 in the profile's own convention; null = cumulative (torch) / absent
  weight, bias             null for no affine
  running_mean, running_var  the layer's statistics before the first call (null: profile initial)
  steps: [{mode: train | eval | batch_stats, x, dy?, expect: {y?, running_mean?, running_var?,
           batch_mean?, batch_var?, dx?, dweight?, dbias?}}]
  tolerance: {rtol, atol}  |actual - expected| <= atol + rtol |expected|, the peer's assertion
  note                     what the case pins and anything a reader needs to follow it

`python tests/peers/expectations.py FILE...` prints each case's worst error/tolerance ratio.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnconf.reference import oracle
from bnconf.spec.loader import get_spec

DATA = Path(__file__).resolve().parent / "data"
QUANTITIES = ("y", "running_mean", "running_var", "batch_mean", "batch_var", "dx", "dweight", "dbias")


def array(value) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return np.asarray(value["data"], np.float64).reshape(value["shape"])
    return np.asarray(value, np.float64)


@dataclass
class Miss:
    step: int
    quantity: str
    ratio: float          # worst |actual - expected| / (atol + rtol |expected|); > 1 fails
    detail: str


def replay(case: dict, spec=None) -> list[tuple[int, str, float, str]]:
    """Every (step, quantity, ratio, detail) the case expects, the oracle's value against it."""
    spec = spec or get_spec()
    profile = spec.profile(case["profile"])
    for field, value in case.get("conventions", {}).items():   # a peer mode the profile names as data
        profile = profile.with_convention(**{field: value})
    fa, eps = int(case["feature_axis"]), float(case["eps"])
    weight, bias = array(case.get("weight")), array(case.get("bias"))
    tol = case["tolerance"]
    first_x = array(case["steps"][0]["x"])
    c = first_x.shape[fa]
    mean = array(case.get("running_mean"))
    var = array(case.get("running_var"))
    mean = np.full(c, profile.initial["running_mean"]) if mean is None else mean
    var = np.full(c, profile.initial["running_var"]) if var is None else var
    state = (mean, var, np.zeros(c), np.zeros(c), 0)
    out = []
    for i, step in enumerate(case["steps"]):
        x = array(step["x"])
        got: dict[str, np.ndarray] = {}
        if step["mode"] == "eval":
            shape = [1] * x.ndim
            shape[fa] = -1
            got["y"] = oracle.normalize(x, state[0].reshape(shape), state[1].reshape(shape), eps, weight, bias, fa,
                                        profile.eps_placement)
            if "dy" in step:
                got["dx"], got["dweight"], got["dbias"] = oracle.grads_eval(x, array(step["dy"]), weight, state[0],
                                                                            state[1], eps, fa)
        else:
            y, bm, bv, n = oracle.train_forward(x, weight, bias, eps, fa, profile)
            got.update(y=y, batch_mean=bm.reshape(-1), batch_var=bv.reshape(-1))
            if step["mode"] == "train":
                state = oracle.update_running(state, bm.reshape(-1), bv.reshape(-1), n, case.get("momentum"), profile)
            if "dy" in step:
                got["dx"], got["dweight"], got["dbias"] = oracle.grads_train(x, array(step["dy"]), weight, eps, fa)
        got["running_mean"], got["running_var"] = state[0], state[1]
        for q, want in step["expect"].items():
            if q not in QUANTITIES:
                raise ValueError(f"{case['id']} step {i}: unknown quantity {q!r} (known: {QUANTITIES})")
            want = array(want)
            have = np.broadcast_to(got[q], want.shape) if want.size else got[q].reshape(want.shape)
            out.append((i, q, *_ratio(have, want, tol)))
    return out


def _ratio(have: np.ndarray, want: np.ndarray, tol: dict) -> tuple[float, str]:
    if want.size == 0:
        return 0.0, "empty"
    both_nan = np.isnan(have) & np.isnan(want)
    same_inf = np.isinf(want) & (have == want)
    allowed = tol.get("atol", 0.0) + tol.get("rtol", 0.0) * np.abs(want)
    err = np.where(both_nan | same_inf, 0.0, np.abs(have - want))
    err = np.where(np.isnan(err), np.inf, err)
    r = np.where(err == 0, 0.0, err / np.where(allowed > 0, allowed, np.finfo(float).tiny))
    k = int(np.argmax(r))
    return float(r.flat[k]), f"at {np.unravel_index(k, want.shape)}: oracle {have.flat[k]!r}, peer {want.flat[k]!r}"


def load(path: Path) -> tuple[dict, list[dict]]:
    doc = json.loads(Path(path).read_text())
    for field in ("project", "path", "commit", "url"):
        if not doc.get("source", {}).get(field):
            raise ValueError(f"{path}: source.{field} is missing (a peer's numbers are cited facts)")
    return doc["source"], doc["cases"]


def all_cases() -> list[tuple[str, dict, dict]]:
    return [(f"{p.stem}::{c['id']}", src, c) for p in sorted(DATA.glob("*.json")) for src, cases in [load(p)]
            for c in cases]


def main(paths: list[str]) -> int:
    worst_all = 0.0
    for path in paths:
        src, cases = load(Path(path))
        print(f"{path}: {src['project']} {src['path']} @ {src['commit'][:12]}, {len(cases)} cases")
        for case in cases:
            misses = replay(case)
            worst = max(misses, key=lambda m: m[2])
            worst_all = max(worst_all, worst[2])
            flag = "ok  " if worst[2] <= 1 else "MISS"
            print(f"  {flag} {case['id']:50s} worst {worst[2]:.3g} (step {worst[0]} {worst[1]}: {worst[3]})")
    return 0 if worst_all <= 1 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Reproducers: a folder with `case.npz` and `repro.py` per finding, written by the run.

A single-device reproducer needs only NumPy and the framework, not bnconf. The script embeds
the adapter's own source (adapters import nothing from bnconf for this reason) and the trace
driver, rebuilds the call from the saved parameters, reruns it, and prints the measured error
against the saved expected values and bounds, so the failure shows the same way it did in
the audit. A cross-replica reproducer reruns its case through bnconf's multi-replica harness
(running/sync_audit.reproduce). Both first print the finding as every other place words it
(findings.py).
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import numpy as np

from bnconf.cases.sync_case import SyncCase, materialize
from bnconf.report import findings
from bnconf.running import trace as trace_mod
from bnconf.running.audit import judged_by_probes

_RELATIVE_IMPORT = re.compile(r"^from \.\S* import .*$", re.M)

DRIVER = r'''
# ---------------------------------------------------------------- driver (bnconf repro)
if __name__ == "__main__":
    import json, os, sys
    here = os.path.dirname(os.path.abspath(__file__))
    data = np.load(os.path.join(here, "case.npz"), allow_pickle=False)
    meta = json.loads(str(data["meta"]))
    arrays = {k[2:]: data[k] for k in data.files if k.startswith("a/")}
    params = dict(meta["params"], weight=arrays.get("weight"), bias=arrays.get("bias"))
    impl = next(i for i in implementations() if i.name == meta["implementation"])
    extra = [(e["name"], e["mode"], data["x/" + e["name"]], dict(params, **e["params"]) if e["params"] else None)
             for e in meta["extra"]]
    post = [(name, data["p/" + name]) for name in meta["post"]]
    out = run_trace(impl, params, arrays, meta["steps"], meta["device"], grads=meta["grads"], extra=extra, post=post,
                    probes=tuple(meta.get("probes", ())))
    print(meta["said"])
    if "error" in out:
        print("the call raised:", out["error"]["type"], "-", out["error"]["message"])
    key = meta["key"]
    failed = False
    if key and "e/expected" in data.files:
        base, _, reduce = key.partition(":")
        parts = base.split("+")
        if len(parts) > 1:
            pre = parts[0].rsplit("/", 1)[0]
            act = np.concatenate([np.asarray(out[pre + "/" + p.split("/")[-1]], np.float64).ravel() for p in parts])
        else:
            act = np.asarray(out.get(base), np.float64)
        if reduce == "mean":
            axes = tuple(a for a in range(act.ndim) if a != meta["params"]["feature_axis"])
            act = act.mean(axis=axes)
        exp, tol = data["e/expected"], data["e/allowed"]
        if act.shape != exp.shape:
            print(f"{key}: shape {act.shape}, expected {exp.shape}")
            failed = True
        else:
            with np.errstate(invalid="ignore"):
                err = np.where(np.isfinite(tol), np.abs(act - exp), 0.0)
                err = np.where(np.isnan(err), np.inf, err)
                ratio = np.where(err == 0, 0.0, err / np.where(tol > 0, tol, 0.0))
            i = np.unravel_index(int(np.argmax(ratio)), exp.shape) if exp.size else ()
            failed = bool(exp.size and ratio[i] > 1)
            if exp.size:
                print(f"{key}: max error {err[i]:.3g} at {tuple(int(j) for j in i)} "
                      f"(allowed {tol[i]:.3g}); actual {act[i]!r}, expected {exp[i]!r}")
    print("FAIL" if failed or meta["key"] == "" else "PASS (the failure did not reproduce)")
    sys.exit(1 if failed or meta["key"] == "" else 0)
'''


def _strip(src: str) -> str:
    return _RELATIVE_IMPORT.sub("", src)


USER_LOADER = r'''
def implementations():
    import os
    meta = json.loads(str(np.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "case.npz"))["meta"]))
    target, where = meta["implementation"], meta.get("target_path") or meta["implementation"]
    if ":" in where and not where.rsplit(":", 1)[0].endswith(".py"):
        import importlib
        mod, _, name = where.rpartition(":")
        fn = getattr(importlib.import_module(mod), name)
    else:
        fn = load_by_path(where)
    return [implementation(fn, target, "user")]
'''


def script_for(impl) -> str:
    if impl.family == "user" and impl.build.__module__.endswith("numpy_protocol"):
        adapter = importlib.import_module("bnconf.adapters.numpy_protocol")
        protocol = importlib.import_module("bnconf.adapters._protocol")
        return "\n".join(["# Reproducer written by bnconf. Needs numpy and your file; not bnconf.", "import json",
                          _strip(inspect.getsource(protocol)), _strip(inspect.getsource(adapter)),
                          USER_LOADER, _strip(inspect.getsource(trace_mod)), DRIVER])
    return "\n".join(["# Reproducer written by bnconf. Needs numpy and the framework; not bnconf.",
                      adapter_script(impl), "# --- conformance/running/trace.py", _strip(inspect.getsource(trace_mod)),
                      DRIVER])


def adapter_script(impl) -> str:
    """The code a reproducer holds for a built-in implementation: _protocol.py, the sibling
    modules its adapter imports, and the adapter, relative imports taken out. Run alone, its
    implementations() lists `impl` (the module its build comes from defines it)."""
    protocol = importlib.import_module("bnconf.adapters._protocol")
    parts = ["# --- adapters/_protocol.py", _strip(inspect.getsource(protocol))]
    for module in _with_siblings(impl.build.__module__):
        parts += [f"# --- {module.__name__}", _strip(inspect.getsource(module))]
    return "\n".join(parts)


_SIBLING = re.compile(r"^from (\.+)(\w*) import", re.M)


def _with_siblings(name: str, seen=None) -> list:
    """The adapter module and the sibling modules it imports relatively (its shared helpers),
    those first: the script holds their code, as it holds _protocol.py's."""
    seen = set() if seen is None else seen
    seen.add(name)
    module = importlib.import_module(name)
    out = []
    for dots, rel in _SIBLING.findall(inspect.getsource(module)):
        base = name.rsplit(".", len(dots))[0]
        dep = f"{base}.{rel}" if rel else base
        if dep.endswith("._protocol") or dep in seen:
            continue
        out += _with_siblings(dep, seen)
    return out + [module]


def _folder(root, impl, device: str, dtype: str, clause_id: str) -> Path:
    def safe(t):
        return re.sub(r"[^A-Za-z0-9_.-]", "_", t)
    folder = Path(root) / safe(impl.name) / safe(f"{device}-{dtype}-{clause_id}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _said(impl, device, clause, case, outcome) -> str:
    return findings.text(findings.from_outcome(impl.name, device, case.dtype, clause, case, outcome))


def write(root: Path, impl, device: str, clause, case, outcome, run_case_fn) -> str:
    """Save the reproducer of one failing (case, outcome); returns the folder path."""
    folder = _folder(root, impl, device, case.dtype, clause.id)
    arrays, params, _, extra, post = run_case_fn(impl, case, device)
    meta_params = {k: v for k, v in params.items() if k not in ("weight", "bias")}
    cmp = outcome.comparison
    meta = {
        "implementation": impl.name, "device": device, "clause": clause.id, "title": clause.title,
        "case": case.to_json(), "params": meta_params, "steps": case.steps, "grads": case.grads,
        "extra": [{"name": n, "mode": m, "params": {k: v for k, v in (o or {}).items() if not k.startswith("_")}}
                  for n, m, _, o in extra],
        "post": [n for n, _ in post], "probes": list(trace_mod.probes_for(impl.capabilities, judged_by_probes(case))),
        "key": cmp.key if cmp is not None and cmp.expected_array is not None else "",
        "said": _said(impl, device, clause, case, outcome),
    }
    if impl.family == "user":
        path, _, name = impl.name.rpartition(":")
        if path.endswith(".py"):
            meta["target_path"] = f"{Path(path).resolve()}:{name}"
    blobs = {"meta": np.array(json.dumps(meta, default=str))}
    blobs.update({f"a/{k}": v for k, v in arrays.items() if v is not None})
    blobs.update({f"x/{n}": x for n, _, x, _ in extra})
    blobs.update({f"p/{n}": x for n, x in post})
    if meta["key"]:
        blobs["e/expected"] = np.asarray(cmp.expected_array, np.float64)
        blobs["e/allowed"] = np.asarray(cmp.allowed_array, np.float64)
    np.savez_compressed(folder / "case.npz", **blobs)
    (folder / "repro.py").write_text(script_for(impl), encoding="utf-8")
    return str(folder)


SYNC_SCRIPT = '''"""Reproduce a bnconf cross-replica finding: {impl} on {device}, clause {clause}.

Re-runs the saved case (per-replica inputs in case.npz) through the same adapter and
re-checks it. Needs bnconf installed (the multi-replica harness lives there), and the
framework. Saved: the case, every replica's inputs, the outputs seen in the audit.
"""
import os, sys
from bnconf.running.sync_audit import reproduce

sys.exit(reproduce(os.path.dirname(os.path.abspath(__file__))))
'''


def write_sync(root: Path, impl, device: str, clause, case: SyncCase, outcome) -> str:
    """Save the reproducer of one failing cross-replica case; returns the folder path."""
    folder = _folder(root, impl, device, case.dtype, clause.id)
    arrays = materialize(case)
    save = {}
    for r in range(case.replicas):
        save[f"x/{r}"] = arrays["x"][r]
        save[f"dy/{r}"] = arrays["dy"][r]
        save[f"mask/{r}"] = arrays["mask"][r]
    for k in ("weight", "bias"):
        if arrays.get(k) is not None:
            save[k] = arrays[k]
    cmp = outcome.comparison.to_json() if outcome is not None and outcome.comparison is not None else None
    meta = {"implementation": impl.name, "device": device, "clause": clause.id, "case": case.to_json(),
            "note": outcome.note if outcome is not None else "", "comparison": cmp,
            "said": _said(impl, device, clause, case, outcome)}
    np.savez_compressed(folder / "case.npz", meta=np.array(json.dumps(meta)), **save)
    (folder / "repro.py").write_text(SYNC_SCRIPT.format(impl=impl.name, device=device, clause=clause.id),
                                     encoding="utf-8")
    return str(folder)


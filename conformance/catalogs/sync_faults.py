"""Hand-written data-parallel BN in NumPy, replicas simulated in one process: one correct
kernel (counts all-reduced, Chan's parallel variance) and the mistakes real cross-replica
code makes. The meta-tests prove the sync checks pass the first and catch every other one
under the clause named here; `bnconf bench` reports how many cases each one needed.

Each replica only ever sees its own rows plus what an all-reduce would give it, as in a
real engine; that is what makes the faults realistic (a real engine cannot concatenate).
"""
from __future__ import annotations

import numpy as np

from bnconf.adapters._protocol import SyncImplementation, sync_capabilities

FA = -1  # these kernels take channels-last inputs (the capabilities say so)


def _local_moments(x, mask):
    """(count, sum, sum of squared deviations from the local mean) per channel."""
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    m = np.asarray(mask).reshape(-1, x.shape[-1]) if mask is not None else np.ones_like(x, bool)
    n = m.sum(axis=0).astype(np.float64)
    s = np.where(m, x, 0.0).sum(axis=0)
    mu = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    m2 = np.where(m, (x - mu) ** 2, 0.0).sum(axis=0)
    return n, s, m2, mu


def _combine(moments):
    """Chan et al.: exact global count, mean and M2 from per-replica moments (an all-reduce)."""
    n = sum(mo[0] for mo in moments)
    mu = sum(mo[1] for mo in moments) / n
    m2 = sum(mo[2] + mo[0] * (mo[3] - mu) ** 2 for mo in moments)
    return n, mu, m2 / n


def make(fault: str):
    def run(params, inputs, device):
        with np.errstate(all="ignore"):   # an empty replica divides by zero where it is unused
            return _run(params, inputs)

    def _run(params, inputs):
        R = params["replicas"]
        eps, mom = params["eps"], params["momentum"]
        C = params["num_features"]
        w = np.ones(C) if params["weight"] is None else np.asarray(params["weight"], np.float64)
        b = np.zeros(C) if params["bias"] is None else np.asarray(params["bias"], np.float64)
        masks = inputs["mask"] if inputs["mask"] is not None else [None] * R
        if fault == "mask_ignored":
            masks = [None] * R
        moments = [_local_moments(x, m) for x, m in zip(inputs["x"], masks)]
        n, mu, var = _combine([mo for mo in moments if mo[0][0] > 0])
        if fault == "sum_of_squares":        # all-reduce of (sum, sum of squares) in float32: E[x^2] - E[x]^2
            f32 = [np.asarray(x, np.float32).reshape(-1, C) for x in inputs["x"]]
            keep = [np.ones_like(x, bool) if m is None else np.asarray(m).reshape(-1, C) for x, m in zip(f32, masks)]
            s1 = sum(np.where(k, x, 0).sum(axis=0, dtype=np.float32) for x, k in zip(f32, keep))
            s2 = sum(np.where(k, x * x, 0).sum(axis=0, dtype=np.float32) for x, k in zip(f32, keep))
            mu32 = s1 / np.float32(n)
            mu, var = mu32.astype(np.float64), np.maximum(s2 / np.float32(n) - mu32 * mu32, 0).astype(np.float64)
        if fault == "unweighted":            # pmean of per-replica moments (counts ignored)
            live = [mo for mo in moments if mo[0][0] > 0]
            mu = np.mean([mo[3] for mo in live], axis=0)
            var = np.mean([mo[2] / mo[0] + mo[3] ** 2 for mo in live], axis=0) - mu ** 2
        out = []
        dw = np.zeros(C)
        db = np.zeros(C)
        # the backward all-reduce: sum(dy) and sum(dy * x_hat) over the global batch
        xhats, sums = [], [np.zeros(C), np.zeros(C)]
        for r, (x, dy, m) in enumerate(zip(inputs["x"], inputs["dy"], masks)):
            mu_r, var_r = (moments[r][3], moments[r][2] / np.maximum(moments[r][0], 1)) if fault == "local" else (mu, var)
            x = np.asarray(x, np.float64)
            xh = (x - mu_r) / np.sqrt(var_r + eps)
            xhats.append((xh, mu_r, var_r))
            dyf = np.asarray(dy, np.float64)
            keep = np.ones_like(x, bool) if m is None else np.asarray(m)
            sums[0] += np.where(keep, dyf, 0).reshape(-1, C).sum(axis=0)
            sums[1] += np.where(keep, dyf * xh, 0).reshape(-1, C).sum(axis=0)
        for r, (x, dy, m) in enumerate(zip(inputs["x"], inputs["dy"], masks)):
            xh, mu_r, var_r = xhats[r]
            dyf = np.asarray(dy, np.float64)
            y = w * xh + b
            if fault == "grad_local":           # backward without the cross-replica terms
                keep = np.ones_like(xh, bool) if m is None else np.asarray(m)
                n_r = moments[r][0]
                s0 = np.where(keep, dyf, 0).reshape(-1, C).sum(axis=0)
                s1 = np.where(keep, dyf * xh, 0).reshape(-1, C).sum(axis=0)
                dx = w / np.sqrt(var_r + eps) / n_r * (n_r * dyf - s0 - xh * s1)
            else:
                nn = moments[r][0] if fault == "local" else n
                dx = w / np.sqrt(var_r + eps) / nn * (nn * dyf - sums[0] - xh * sums[1])
            if m is not None:
                dx = np.where(m, dx, 0.0)
            dw += np.where(m if m is not None else True, dyf * xh, 0).reshape(-1, C).sum(axis=0)
            db += np.where(m if m is not None else True, dyf, 0).reshape(-1, C).sum(axis=0)
            n_upd = moments[r][0] if fault == "local" else n
            unb = var_r * n_upd / np.maximum(n_upd - 1, 1)
            if fault == "local_count_unbiased":   # global variance, local n in n/(n-1)
                unb = var * moments[r][0] / np.maximum(moments[r][0] - 1, 1)
            rm = (1 - mom) * 0.0 + mom * mu_r
            rv = (1 - mom) * 1.0 + mom * unb
            if fault == "diverge" and r > 0:      # each replica keeps a slightly different update
                rm = rm + 1e-3 * r
            out.append({"y": y.astype(params["dtype"]), "dx": dx.astype(params["dtype"]),
                        "running_mean": rm, "running_var": rv})
        if fault == "local":                      # each replica keeps its own; report the mean
            avg_m = np.mean([o["running_mean"] for o in out], axis=0)
            avg_v = np.mean([o["running_var"] for o in out], axis=0)
            for o in out:
                o["running_mean"], o["running_var"] = avg_m, avg_v
        return {"replicas": out, "dweight": dw, "dbias": db, "y_dtype": params["dtype"], "state_dtype": "float64"}
    return run


# name -> (the clause a correct audit must report it under; None for the correct kernel)
SYNC_FAULTS = {
    "correct": None,
    "unweighted": "BN-SYNC-WEIGHTED",
    "local": "BN-SYNC-GLOBAL",
    "mask_ignored": "BN-SYNC-WEIGHTED",
    "grad_local": "BN-SYNC-GRAD",
    "local_count_unbiased": "BN-SYNC-GLOBAL",
    "diverge": "BN-SYNC-CONSISTENT",
    "sum_of_squares": "BN-VAR-STABLE",
}


def implementation(fault: str, synchronized: bool = True):
    """`synchronized=False` declares the wrapper unsynchronized (BN-SYNC-LOCAL is its norm)."""
    caps = sync_capabilities(ragged=True, mask=True, empty_replica=True, dtypes=("float32", "float64"),
                             default_init=False, synchronized=synchronized)
    tag = "" if synchronized else ",unsynchronized"
    return SyncImplementation(f"numpy-sync[{fault}{tag}]", "torch", caps, make(fault),
                              lambda: {"numpy": np.__version__}, lambda: ["cpu"], "faults")

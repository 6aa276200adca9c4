"""PyTorch data-parallel BN: torch.nn.SyncBatchNorm with torch.distributed, one process per
replica (the way users run it), over gloo or NCCL.

A pool of WORLD rank processes is started once (spawned, file:// rendezvous) and holds one
process group per replica count 2..WORLD; each step is sent to ranks 0..R-1 over pipes, and
every answer is awaited with a time limit: a hung collective kills the whole pool (the
error is returned, the next step starts a fresh pool), so nothing is left behind.
SyncBatchNorm refuses CPU tensors: on CPU the pool still runs it for real and the refusal
comes back as Unsupported with torch's own message. Several ranks can share one GPU with
gloo; NCCL refuses that (one rank per GPU), and that refusal is reported the same way.
"""
import os
import tempfile

import numpy as np

from ._protocol import SyncImplementation, Unsupported, sync_capabilities

FAMILY = "distributed"
WORLD = 8
STEP_TIMEOUT_S = float(os.environ.get("BNCONF_SYNC_STEP_TIMEOUT", "120"))
_POOLS = {}
_REFUSED = {}


def _rank_main(rank, world, init_file, backend, device, conn):
    import torch
    import torch.distributed as dist
    try:
        if device != "cpu":
            torch.cuda.set_device(0)   # every rank on the one GPU
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
        groups = {r: dist.new_group(list(range(r)), backend=backend) for r in range(2, world + 1)}
        conn.send(("ready", None))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            break
        try:
            conn.send(("ok", _step(torch, groups[msg["params"]["replicas"]], msg, device)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    dist.destroy_process_group()


def _step(torch, group, msg, device):
    p = msg["params"]
    dt = {"float32": torch.float32, "float64": torch.float64}[p["dtype"]]
    dev = torch.device("cpu") if device == "cpu" else torch.device("cuda", 0)
    m = torch.nn.SyncBatchNorm(p["num_features"], eps=float(p["eps"]), momentum=float(p["momentum"]),
                               process_group=group).to(device=dev, dtype=dt)
    if p["weight"] is not None:
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(p["weight"]))
            m.bias.copy_(torch.as_tensor(p["bias"]))
    m.train()
    x = torch.as_tensor(msg["x"]).to(device=dev, dtype=dt).requires_grad_(True)
    y = m(x)
    (y * torch.as_tensor(msg["dy"]).to(device=dev, dtype=dt)).sum().backward()
    # A replica with no rows gets no gradient tensors at all (None): its contribution is zero.
    def grad(g, like):
        return (torch.zeros_like(like) if g is None else g).detach().cpu().numpy()
    return {"y": y.detach().cpu().numpy(), "dx": grad(x.grad, x),
            "running_mean": m.running_mean.cpu().numpy(), "running_var": m.running_var.cpu().numpy(),
            "dweight": grad(m.weight.grad, m.weight), "dbias": grad(m.bias.grad, m.bias),
            "y_dtype": str(y.dtype).replace("torch.", ""), "state_dtype": str(m.running_mean.dtype).replace("torch.", "")}


class _Pool:
    def __init__(self, backend, device):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        fd, self.init_file = tempfile.mkstemp(prefix="bnconf-rdzv-")
        os.close(fd)
        os.unlink(self.init_file)
        self.procs, self.conns = [], []
        for r in range(WORLD):
            a, b = ctx.Pipe()
            proc = ctx.Process(target=_rank_main, args=(r, WORLD, self.init_file, backend, device, b), daemon=True)
            proc.start()
            self.procs.append(proc)
            self.conns.append(a)
        for r in range(WORLD):
            status, info = self._recv(r)
            if status != "ready":
                self.close()
                raise RuntimeError(f"rank {r} failed to join the process group: {info}")

    def _recv(self, r):
        if not self.conns[r].poll(STEP_TIMEOUT_S):
            self.close()
            raise TimeoutError(f"rank {r} gave no answer within {STEP_TIMEOUT_S:g} s (a hung collective?); "
                               f"all {WORLD} rank processes were killed")
        try:
            return self.conns[r].recv()
        except EOFError:
            code = self.procs[r].exitcode
            self.close()
            raise RuntimeError(f"rank {r} died (exit code {code}); all rank processes were killed") from None

    def step(self, params, inputs, ranks=None):
        """ranks: which ranks get the step (all R by default; fewer hangs the collective, which
        is how the tests check that a hang is bounded and cleaned up)."""
        R = params["replicas"]
        for r in (range(R) if ranks is None else ranks):
            self.conns[r].send({"params": params, "x": inputs["x"][r], "dy": inputs["dy"][r]})
        return [self._recv(r) for r in (range(R) if ranks is None else ranks)]

    def close(self):
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
        for proc in self.procs:
            proc.join(5)
        try:
            os.unlink(self.init_file)
        except OSError:
            pass


def _run(backend):
    def run(params, inputs, device):
        key = (backend, device)
        if key in _REFUSED:
            raise Unsupported(_REFUSED[key])
        if key not in _POOLS:
            try:
                _POOLS[key] = _Pool(backend, device)
            except RuntimeError as exc:
                # The ranks could not form a process group at all (e.g. NCCL in a CPU-only torch,
                # "Distributed package doesn't have NCCL built in"): torch's own refusal.
                _REFUSED[key] = str(exc)
                raise Unsupported(str(exc)) from None
        pool = _POOLS[key]
        try:
            answers = pool.step(params, inputs)
        except (TimeoutError, RuntimeError):
            _POOLS.pop(key, None)
            raise
        errors = [info for status, info in answers if status != "ok"]
        if errors:
            if any("expected input tensor to be on GPU" in e or "Duplicate GPU" in e for e in errors):
                raise Unsupported(errors[0])
            raise RuntimeError("; ".join(sorted(set(errors))))
        reps = [info for _, info in answers]
        return {"replicas": [{k: a[k] for k in ("y", "dx", "running_mean", "running_var")} for a in reps],
                "dweight": np.sum([a["dweight"] for a in reps], axis=0),
                "dbias": np.sum([a["dbias"] for a in reps], axis=0),
                "y_dtype": reps[0]["y_dtype"], "state_dtype": reps[0]["state_dtype"]}
    return run


def versions():
    import torch
    return {"torch": torch.__version__}


def devices():
    import torch
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def implementations():
    common = dict(ragged=True, empty_replica=True, feature_axes=("first",), dtypes=("float32", "float64"),
                  default_init=False)
    return [SyncImplementation(f"torch.nn.SyncBatchNorm[{b}]", "torch", sync_capabilities(**common), _run(b), versions,
                               devices, FAMILY) for b in ("gloo", "nccl")]

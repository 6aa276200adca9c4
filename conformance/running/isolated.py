"""User code in processes of its own. A template process loads the target and forks
implementation processes that answer build / forward / running_stats / counter over a socket. A
segfault, os._exit, an OOM kill or a hang in C ends one of those, not the audit: the call raises
ProcessDied or CallTimeout here, trace.py records it as that phase's error, the checks judge it
under the clause the case exercises (BN-NORMALIZE for a training step, ...), and the next build
gets a fresh fork: a few ms, where an interpreter and its imports take ~0.1 s (seconds with
torch), and a function that crashes on every rank-3 input dies ~150 times in a default audit.

They ignore SIGINT, each in a session of its own: Ctrl-C interrupts the audit, never the user's
code. A KeyboardInterrupt raised there is the user's code raising (a violation like any other).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import select
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref

import numpy as np

from bnconf.adapters import _protocol
from bnconf.adapters._protocol import Implementation, Unsupported
from bnconf.adapters.numpy_protocol import CALL_TIMEOUT_S, CallTimeout
from bnconf.running.isolated_child import _PID, _Gone, _kill_group, _Reader, _send
from bnconf.running.targets import TargetError

# Beyond the per-call limit: the child's own SIGALRM limit answers first with a CallTimeout of
# its own; only code that never returns to the interpreter needs the kill.
MARGIN_S = 2.0
LOAD_LIMIT_S = 120.0     # importing the target: torch alone takes seconds on a cold cache
_LIVE: weakref.WeakSet = weakref.WeakSet()     # templates and children, for shutdown()


class ProcessDied(Exception):
    """The implementation's process ended during a call: the user's code crashed, not bnconf."""


class RemoteError(Exception):
    """An exception of the implementation's process under its own type name (trace.py records
    type(exc).__name__: ProtocolError, ValueError, KeyboardInterrupt, ...)."""


_REMOTE_TYPES: dict = {}


def _rebuild(name: str, message: str) -> Exception:
    """Unsupported arrives as the real class (the engine tells a missing capability from a
    failure by it), a TargetError as targets.py's (exit 2); the rest as Exceptions, even a
    KeyboardInterrupt of the user's code, so that it is that call's error and stops nothing."""
    if name == "TargetError":
        return TargetError(message)
    if name in ("Unsupported", "CallTimeout"):
        return (Unsupported if name == "Unsupported" else CallTimeout)(message)
    if name not in _REMOTE_TYPES:
        _REMOTE_TYPES[name] = type(name, (RemoteError,), {"__module__": __name__})
    return _REMOTE_TYPES[name](message)


# ------------------------------------------------------------------ this process's side
def _how(rc: int | None) -> str:
    if rc is None:
        return "ended"
    if rc >= 0:
        return f"exited with status {rc}"
    sig = signal.Signals(-rc)
    return f"died with {sig.name}" + (" (as the OOM killer does)" if sig == signal.SIGKILL else "")


_LIBRARY_DIRS = tuple(os.path.join(os.path.realpath(d), "") for d in
                      [sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")]
                      + [os.path.dirname(os.path.dirname(__file__)),   # all of bnconf (conformance/)
                         os.path.dirname(_protocol.__file__)])


def _last_user_frame(log_fd: int) -> str:
    """From faulthandler's dump, the innermost frame outside the standard library, packages
    and bnconf: where the user's code crashed."""
    text = os.pread(log_fd, 16384, max(0, os.fstat(log_fd).st_size - 16384)).decode("utf-8", "replace")
    dump = text[text.rfind("most recent call first"):] if "most recent call first" in text else ""
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', dump)
    frames = [f for f in frames if not os.path.realpath(f[0]).startswith(_LIBRARY_DIRS)] or frames
    if not frames:
        return ""
    path, line, fn = frames[0]
    return f"; last frame: {os.path.relpath(path) if path.startswith(os.getcwd()) else path}:{line} in {fn}"


_BOOT = "import sys, json; sys.path[:] = json.loads(sys.argv[1]); from {mod} import serve; serve(sys.argv[2:])"


class _Template:
    """The process that loaded the target; it forks implementation processes and, as their
    parent, reaps them and tells their exit status."""

    def __init__(self, load: dict):
        ours, theirs = socket.socketpair()
        self.log = tempfile.TemporaryFile()
        # the death signal follows the thread that forks: only the main thread outlives the audit
        linked = "1" if threading.current_thread() is threading.main_thread() else "0"
        argv = [json.dumps([str(p) for p in sys.path]), str(theirs.fileno()), str(os.getpid()), linked]
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT.format(mod="bnconf.running.isolated_child"), *argv],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, start_new_session=True)
        theirs.close()
        self.sock, self.fd, self.reader = ours, ours.fileno(), _Reader(ours.fileno())
        self._finalizer = weakref.finalize(self, _kill_group, self.proc.pid, self.proc)
        _LIVE.add(self)
        self.meta = self._load(load)

    def _load(self, load: dict) -> dict:
        """Raises targets.TargetError, as loading in this process does."""
        try:
            reply = self._ask(("load", load), LOAD_LIMIT_S)
        except (TimeoutError, _Gone, OSError) as exc:
            self.kill()
            why = f"took over {LOAD_LIMIT_S:g} s" if isinstance(exc, TimeoutError) else _how(self.proc.returncode)
            reply = ("err", "TargetError", f"loading {load['target']!r}: its process {why}"
                                           f"{_last_user_frame(self.log.fileno())}")
        if reply[0] == "err":
            self.kill()
            raise _rebuild(reply[1], reply[2])
        return reply[1]

    def _ask(self, request, limit: float):
        _send(self.fd, request)
        return self.reader.recv(time.monotonic() + limit)

    def fork(self, timeout) -> _Child:
        _send(self.fd, ("fork",))
        if not select.select([self.fd], [], [], LOAD_LIMIT_S)[0]:
            raise TimeoutError()
        msg, fds, _, _ = socket.recv_fds(self.sock, _PID.size, 2)
        if len(msg) < _PID.size or len(fds) < 2:
            raise _Gone()
        return _Child(self, _PID.unpack(msg)[0], fds[0], fds[1], timeout)

    def wait(self, pid: int) -> int:
        return self._ask(("wait", pid), 30)

    def kill(self) -> None:
        self._finalizer()
        _LIVE.discard(self)


class _Child:
    """One implementation process, forked by the template."""

    def __init__(self, template: _Template, pid: int, fd: int, log_fd: int, timeout):
        self.template, self.pid, self.fd, self.log_fd, self.timeout = template, pid, fd, log_fd, timeout
        for f in (fd, log_fd):
            os.set_inheritable(f, False)
        self.reader, self.death, self.drops, self.last_hid = _Reader(fd), None, [], 0
        self._finalizer = weakref.finalize(self, _kill_group, pid, None, (fd, log_fd))
        _LIVE.add(self)

    def batch(self, ops: list) -> list:
        """ops: (op, args, what), run in order in one round trip; the replies, the last an
        error reply when an op failed (the child stops there)."""
        if self.death is not None:
            raise type(self.death)(str(self.death))
        drops, self.drops = self.drops, []
        replies = []
        try:
            try:
                _send(self.fd, ([(op, args) for op, args, _ in ops], drops))
            except OSError:      # it is gone: reading says how
                pass
            for _, _, what in ops:
                replies.append(self._receive(what))
                if replies[-1][0] == "err":
                    break
        except BaseException as exc:    # Ctrl-C: a reply would arrive in the middle of the next call
            if not isinstance(exc, (ProcessDied, CallTimeout)):
                self.death = ProcessDied(f"the audit was interrupted during {ops[min(len(replies), len(ops) - 1)][2]}")
                self.kill()
            raise
        return replies

    def _receive(self, what: str):
        """The call's own limit, and MARGIN_S more for the process to answer."""
        try:
            return self.reader.recv(None if self.timeout is None else time.monotonic() + self.timeout + MARGIN_S)
        except TimeoutError:
            raise self._end(CallTimeout(f"the call ({what}) did not return within {self.timeout:g} s, nor its "
                                        f"process within {MARGIN_S:g} s more; the process was killed")) from None
        except (_Gone, OSError, EOFError, pickle.UnpicklingError):
            raise self._end(None, what) from None

    def _end(self, error, what: str = "") -> Exception:
        """Kill (error: a timeout) and reap the process, and remember why it ended: every later
        call of its instances raises the same. Returns the error to raise."""
        if error is not None:
            _kill_group(self.pid)
        try:
            how = _how(self.template.wait(self.pid))
        except (OSError, _Gone, TimeoutError):
            how = _how(None)
        self.death = error or ProcessDied(f"the implementation's process {how} during {what}"
                                          f"{_last_user_frame(self.log_fd)}")
        self.kill()
        return type(self.death)(str(self.death))

    def kill(self) -> None:
        self.death = self.death or ProcessDied("the implementation's process was closed")
        self._finalizer()
        _LIVE.discard(self)


def _outcome(reply):
    """A reply's value, or its exception rebuilt here."""
    return (None, _rebuild(reply[1], reply[2])) if reply[0] == "err" else (reply[1:], None)


class _Instance:
    """An instance built in the implementation's process, valid while that process lives.

    The build travels with the instance's first call, and every build or forward brings back
    running_stats() and counter() as they are right after it: trace.py asks for both after each
    step, and a round trip (~0.1-0.3 ms) costs more than a BN call on a case's small arrays."""

    def __init__(self, child: _Child, params: dict, device):
        child.last_hid += 1
        self.child, self.hid, self.failure, self.stats = child, child.last_hid, None, None
        self.given = {k: v for k, v in params.items() if isinstance(v, np.ndarray)}
        self.unsent = ("build", (self.hid, params, device), "build")

    def _run(self, op=None, args=(), what=""):
        if self.failure is not None:
            raise type(self.failure)(str(self.failure))
        ops = ([self.unsent] if self.unsent else []) + ([(op, (self.hid,) + args, what)] if op else [])
        self.unsent = None
        replies = self.child.batch(ops)
        if ops[0][0] == "build" and replies[0][0] == "ok":
            _mirror(replies[0][1], self.given)
        value, error = _outcome(replies[-1])
        if error is not None:
            if ops[0][0] == "build" and len(replies) == 1:
                self.failure = error          # the instance never existed
            self.stats = None                 # what a failed call left is asked for afresh
            raise error
        self.stats = value[-1]
        return value

    def forward(self, x, training, dy):
        out, writes, _ = self._run("forward", (x, training, dy), f"forward ({'train' if training else 'eval'})")
        _mirror(writes, dict(self.given, x=x, dy=dy))
        return out

    def forward_under(self, x, training, grad_enabled):
        mode = f"{'train' if training else 'eval'}, gradients {'on' if grad_enabled else 'off'}"
        return self._run("forward_under", (x, training, grad_enabled), f"forward ({mode})")[0]

    def initial_affine(self):
        """None where the implementation does not expose its parameters (running/trace.py)."""
        return self._run("initial_affine", (), "reading gamma and beta")[0]

    def reload(self):
        return self._run("reload", (), "save and load the state")[0]

    def to_float64(self):
        return self._run("to_float64", (), "conversion to float64")[0]

    def grad_grad(self, x, dy, v):
        return self._run("grad_grad", (x, dy, v), "second backward pass")[0]

    def freeze(self):
        return self._run("freeze", (), "freezing")[0]

    def reset_stats(self):
        return self._run("reset_stats", (), "reset of the running statistics")[0]

    def _stat(self, i: int):
        if self.stats is None:
            self._run(*(() if self.unsent or self.failure else ("stats", (), "running_stats")))
        value, error = _outcome(self.stats[i])
        if error is not None:
            raise error
        return value[0]

    def running_stats(self):
        return self._stat(0)

    def counter(self):
        return self._stat(1)

    def __del__(self):
        child = self.__dict__.get("child")
        if child is not None and child.death is None and self.unsent is None and self.failure is None:
            child.drops.append(self.hid)


def _mirror(writes: dict, arrays: dict) -> None:
    """What the user's code wrote into the arrays it was given is written into ours, so that
    trace.py sees the mutation (BN-PURE) as it would in one process."""
    for key, value in writes.items():
        dst = arrays.get(key)
        if isinstance(dst, np.ndarray) and dst.shape == np.shape(value) and dst.flags.writeable:
            np.copyto(dst, value, casting="unsafe")


class _Processes:
    """The template and the implementation process of one target; a fresh fork replaces a dead one."""

    def __init__(self, load: dict):
        self.load, self.child, self.template = load, None, _Template(load)

    def build(self, params, device) -> _Instance:
        if self.child is None or self.child.death is not None:
            try:
                self.child = self.template.fork(self.load["timeout"])
            except (OSError, _Gone, TimeoutError):      # the template itself is gone: load again
                self.template.kill()
                self.template = _Template(self.load)
                try:
                    self.child = self.template.fork(self.load["timeout"])
                except (OSError, _Gone, TimeoutError) as exc:
                    raise ProcessDied(f"no implementation process could be started: {exc!r}") from None
        return _Instance(self.child, params, device)

    def close(self) -> None:
        if self.child is not None:
            self.child.kill()
        self.template.kill()


class IsolatedImplementation(Implementation):
    """The user's target behind a template process and the implementation process it forks."""

    def __init__(self, load: dict):
        procs = self._procs = _Processes(load)
        meta = procs.template.meta

        def build(params, device):
            return procs.build(params, device)
        # repro.script_for embeds the adapter named by build.__module__: a reproducer runs the
        # user's code in one process, through the adapter the child uses
        build.__module__ = meta["build_module"]
        super().__init__(meta["name"], meta["profile"], meta["capabilities"], build,
                         lambda: dict(meta["versions"]), lambda: list(meta["devices"]), meta["family"])

    def close(self) -> None:
        self._procs.close()


def isolated_implementation(target, profile, kind="numpy", timeout=CALL_TIMEOUT_S, **templates) -> IsolatedImplementation:
    """Raises targets.TargetError, as the in-process loader does, when the target cannot be loaded.
    templates: call / init / returns / backward (running/call_templates.py)."""
    return IsolatedImplementation({"target": target, "profile": profile, "kind": kind, "timeout": timeout,
                                   **{k: v for k, v in templates.items() if v}})


def shutdown() -> None:
    """Kill every process started here, at once (Ctrl-C: nothing may outlive the audit)."""
    for proc in list(_LIVE):
        proc.kill()


def make_implementation(target, profile, kind="numpy", timeout=CALL_TIMEOUT_S, **templates) -> IsolatedImplementation:
    """The user's target in a process of its own: a segfault, os._exit, an OOM kill or a hang
    in it is a violation of the clause being exercised, never the audit's end. Raises
    TargetError, in this process, when the target cannot be loaded."""
    return isolated_implementation(target, profile, kind, timeout, **templates)

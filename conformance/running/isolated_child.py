"""The implementation processes' side of isolated.py: a template process loads the user's
target once and forks one process per audit session; each answers build / forward /
running_stats / counter calls over a socket, in a session of its own with SIGINT ignored (a
Ctrl-C at the terminal reaches the audit, never the user's code). Also the framing both sides
speak: length-prefixed pickles."""
from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

from bnconf.running.call_templates import TEMPLATE_OPTIONS
from bnconf.running.targets import load_implementation

_HEADER, _PID = struct.Struct("<Q"), struct.Struct("<q")

# ------------------------------------------------------------------ framing (both sides)
def _send(fd: int, obj=None, data: bytes | None = None) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if data is None else data
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


class _Gone(Exception):
    """The other end has exited."""


class _Reader:
    """Length-prefixed pickles, read in large chunks (one read per small reply)."""

    def __init__(self, fd: int):
        self.fd, self.buf = fd, bytearray()

    def recv(self, deadline: float | None = None):
        while True:
            if len(self.buf) >= _HEADER.size:
                end = _HEADER.size + _HEADER.unpack_from(self.buf)[0]
                if len(self.buf) >= end:
                    data = bytes(self.buf[_HEADER.size:end])
                    del self.buf[:end]
                    return pickle.loads(data)
            if deadline is not None and not select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError()
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                raise _Gone()
            self.buf += chunk


def _kill_group(pid: int, proc=None, fds=()) -> None:
    """Each of these processes leads its own group: whatever it started goes with it."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for f in fds:
        os.close(f)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


# ------------------------------------------------------------------ the template's side
def serve(argv: list) -> None:
    """The template: load the target, then fork and reap implementation processes on request
    until the audit closes the socket."""
    import faulthandler
    fd, parent, linked = int(argv[0]), int(argv[1]), argv[2] == "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if linked:
        _die_with(parent)
    faulthandler.enable()
    ctl, reader, server = socket.socket(fileno=fd), _Reader(fd), _Server()
    while True:
        try:
            msg = reader.recv()
        except _Gone:
            os._exit(0)
        if msg[0] == "load":
            _send(fd, data=server.handle("load", (msg[1],))[0])
        elif msg[0] == "fork":
            _fork(ctl, server)
        else:
            _send(fd, _reap(msg[1]))


def _fork(ctl, server) -> None:
    ours, theirs = socket.socketpair()
    log = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            ours.close()
            _serve_calls(theirs.fileno(), log.fileno(), server)
        finally:
            os._exit(1)
    socket.send_fds(ctl, [_PID.pack(pid)], [ours.fileno(), log.fileno()])
    for f in (ours, theirs, log):
        f.close()


def _reap(pid: int) -> int | None:
    """Its exit status as Popen.returncode gives it (None: not a child of ours); one that closed
    its socket but lives on is killed."""
    try:
        for _ in range(200):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        _kill_group(pid)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except ChildProcessError:
        return None


def _serve_calls(fd: int, log_fd: int, server) -> None:
    """An implementation process: its own session (no Ctrl-C at the terminal reaches it), its
    output in its own log (a C printf stays out of the audit's stdout), calls answered until
    the audit closes the socket."""
    template = os.getppid()
    os.setsid()
    _die_with(template)
    null = os.open(os.devnull, os.O_RDONLY)
    for target, source in ((0, null), (1, log_fd), (2, log_fd)):
        os.dup2(source, target)
    reader = _Reader(fd)
    while True:
        try:
            ops, drops = reader.recv()
        except _Gone:
            os._exit(0)
        for hid in drops:
            server.instances.pop(hid, None)
        for op, args in ops:
            data, ok = server.handle(op, args)
            _send(fd, data=data)
            if not ok:
                break


def _die_with(parent: int) -> None:
    """A hung process must not outlive an audit killed with SIGKILL (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)


def _result(fn) -> tuple:
    """("ok", value...) or ("err", type name, message): whatever the user's code raises,
    KeyboardInterrupt and SystemExit too, is that call's error."""
    try:
        return ("ok",) + fn()
    except BaseException as exc:
        text = str(exc)[:2000]
        if isinstance(exc, KeyboardInterrupt):
            note = "raised by the implementation's own code (a Ctrl-C never reaches its process)"
            text = f"{text}; {note}" if text else note
        return ("err", type(exc).__name__, text)


def _bytes(arrays: dict) -> dict:
    return {k: a.tobytes() for k, a in arrays.items() if isinstance(a, np.ndarray)}


def _changed(arrays: dict, before: dict) -> dict:
    return {k: a for k, a in arrays.items() if isinstance(a, np.ndarray) and a.tobytes() != before.get(k)}


class _Server:
    """The loaded implementation and its live instances: hid -> [instance, the arrays it was
    given, their bytes] (what the user's code writes into them is sent back)."""

    def __init__(self):
        self.impl, self.instances = None, {}

    def handle(self, op: str, args: tuple) -> tuple[bytes, bool]:
        """The pickled reply and whether the op succeeded (a result that cannot be pickled is an error)."""
        reply = _result(lambda: getattr(self, "op_" + op)(*args))
        try:
            return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL), reply[0] == "ok"
        except Exception as exc:
            return pickle.dumps(("err", type(exc).__name__, f"the result cannot be sent: {exc}"[:2000])), False

    def op_load(self, load: dict) -> tuple:
        impl = self.impl = load_implementation(load["target"], load["profile"], load["kind"], load["timeout"],
                                               *(load.get(k) for k in TEMPLATE_OPTIONS))
        versions = _result(lambda: (impl.versions(),))
        return ({"name": impl.name, "profile": impl.profile, "capabilities": impl.capabilities,
                 "family": impl.family, "devices": impl.devices(), "build_module": impl.build.__module__,
                 "versions": versions[1] if versions[0] == "ok" else {"error": f"{versions[1]}: {versions[2]}"}},)

    def _stats(self, inst) -> tuple:
        return _result(lambda: (inst.running_stats(),)), _result(lambda: (inst.counter(),))

    def op_stats(self, hid: int) -> tuple:
        return (self._stats(self.instances[hid][0]),)

    def op_build(self, hid: int, params: dict, device) -> tuple:
        given = {k: v for k, v in params.items() if isinstance(v, np.ndarray)}
        before = _bytes(given)
        inst = self.impl.build(params, device)
        self.instances[hid] = [inst, given, _bytes(given)]
        return _changed(given, before), self._stats(inst)

    def op_forward_under(self, hid: int, x, training, grad_enabled) -> tuple:
        entry = self.instances[hid]
        return entry[0].forward_under(x, training, grad_enabled), {}, self._stats(entry[0])

    def op_initial_affine(self, hid: int) -> tuple:
        inst = self.instances[hid][0]
        own = getattr(inst, "initial_affine", None)
        return (own() if callable(own) else None), {}, self._stats(inst)

    def op_reload(self, hid: int) -> tuple:
        entry = self.instances[hid]
        return entry[0].reload(), {}, self._stats(entry[0])

    def op_to_float64(self, hid: int) -> tuple:
        entry = self.instances[hid]
        return entry[0].to_float64(), {}, self._stats(entry[0])

    def op_grad_grad(self, hid: int, x, dy, v) -> tuple:
        entry = self.instances[hid]
        return entry[0].grad_grad(x, dy, v), {}, self._stats(entry[0])

    def op_freeze(self, hid: int) -> tuple:
        entry = self.instances[hid]
        return entry[0].freeze(), {}, self._stats(entry[0])

    def op_reset_stats(self, hid: int) -> tuple:
        entry = self.instances[hid]
        return entry[0].reset_stats(), {}, self._stats(entry[0])

    def op_forward(self, hid: int, x, training, dy) -> tuple:
        entry = self.instances[hid]
        args = {"x": x, "dy": dy}
        before = _bytes(args)
        out = entry[0].forward(x, training, dy)
        writes = _changed(args, before)
        moved = _changed(entry[1], entry[2])
        if moved:
            writes.update(moved)
            entry[2] = _bytes(entry[1])
        return out, writes, self._stats(entry[0])

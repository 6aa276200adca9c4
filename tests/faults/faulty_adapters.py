"""Implementations that crash, hang, get killed or fail to import, for the runner tests.
Loaded through BNCONF_ADAPTERS like any third-party adapter."""
import os
import signal
import time

from bnconf.adapters._protocol import Implementation, default_capabilities


def _versions():
    return {"fault": "1"}


def _devices():
    return ["cpu"]


def _segfault(params, device):
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(params, device):
    time.sleep(3600)


def _oom_killed(params, device):
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does


def _import_error():
    import bnconf_framework_that_does_not_exist  # noqa: F401


def implementations():
    caps = default_capabilities(dtypes=("float32",), grads=False)
    return [
        Implementation("fault.segfault", "torch", caps, _segfault, _versions, _devices, "extra"),
        Implementation("fault.hang", "torch", caps, _hang, _versions, _devices, "extra"),
        Implementation("fault.oom_killed", "torch", caps, _oom_killed, _versions, _devices, "extra"),
        Implementation("fault.import_error", "torch", caps, _segfault, _import_error, _devices, "extra"),
    ]

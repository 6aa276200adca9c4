"""Hand-written BNs (NumPy protocol) that end or stall the process they run in, on some input
only, for tests/test_isolation.py. Each is the correct function elsewhere, so that every
violation the audit reports comes from the fault."""
import ctypes
import os
import signal
import time

import numpy as np


def _good(x, weight, bias, running_mean, running_var, *, training, momentum, eps, axis=1):
    axis = axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    n = x.size // max(x.shape[axis], 1)
    if training and n < 2:
        raise ValueError(f"expected more than 1 value per channel when training, got {n}")
    if training or running_mean is None:
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        if training and running_mean is not None:
            running_mean = (1 - momentum) * running_mean + momentum * mean.reshape(-1)
            running_var = (1 - momentum) * running_var + momentum * var.reshape(-1) * n / (n - 1)
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype), running_mean, running_var


def segfaults_on_rank3(x, *a, **k):
    if x.ndim == 3:
        ctypes.string_at(0)
    return _good(x, *a, **k)


def exits_on_rank4(x, *a, **k):
    if x.ndim == 4:
        os._exit(0)
    return _good(x, *a, **k)


def sigkills_itself_on_rank5(x, *a, **k):
    if x.ndim == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
    return _good(x, *a, **k)


def raises_keyboard_interrupt_on_rank3(x, *a, **k):
    if x.ndim == 3:
        raise KeyboardInterrupt("from the user's own code")
    return _good(x, *a, **k)


def hangs_once_in_c(x, *a, **k):
    """The first rank-3 call stalls where no Python signal handler runs (SIGALRM blocked, as
    in a C loop), once per run: the marker file in BNCONF_TEST_MARKER records its pid, so that
    the audit's later cases run at full speed and the test can check the process is gone."""
    marker = os.environ.get("BNCONF_TEST_MARKER")
    if x.ndim == 3 and marker and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    return _good(x, *a, **k)

"""Hand-written BNs (NumPy protocol) that end or stall the process they run in, on some input
only, for tests/test_isolation.py. Each is the correct function elsewhere, so that every
violation the audit reports comes from the fault."""
import ctypes
import os
import signal
import time


def _good(x, *a, **k):
    """The catalog's correct two-pass kernel (bnconf.catalogs.faults)."""
    from bnconf.catalogs.faults import CORRECT
    return CORRECT["two_pass"](x, *a, **k)


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

"""What ends a fit from outside: SIGINT / SIGTERM to the driver, and the driver process exiting.

Each must leave the job record saying the job stopped and why, not ``InProgress`` forever. SIGINT reaches the
fit as ``KeyboardInterrupt`` (pyspark's handler also cancels the Spark jobs); SIGTERM's default is to end the
process on the spot, so while a fit runs in the main thread it raises :class:`DriverInterrupted` there instead,
and once the job is recorded and its Spark job cancelled the signal is delivered again with its default action:
the process ends as SIGTERM ends it, even where something (a notebook) would have caught the exception. A
driver exiting normally while a fit runs in another thread gets the record written by ``atexit``. A driver
killed outright (SIGKILL, out of memory) writes nothing: :func:`spark_ml.jobs.get` notices the dead process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from .. import jobs


class DriverInterrupted(SystemExit):
    """A signal asked the driver to stop while a fit ran."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum
        self.reason = f"the driver received {signal.Signals(signum).name}"


_active: set[str] = set()
_lock = threading.Lock()
_registered = False


def reason_of(exc: BaseException) -> str:
    """What stopped the job, for its record."""
    if isinstance(exc, DriverInterrupted):
        return exc.reason
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted in the driver (SIGINT)"
    if isinstance(exc, SystemExit):
        return f"the driver called exit ({exc.code})"
    return f"{type(exc).__name__} in the driver"


@contextlib.contextmanager
def job_interrupts(name: str) -> Iterator[None]:
    """While the block runs, SIGTERM stops the fit (main thread only) and the driver's exit stops the job."""
    global _registered
    with _lock:
        _active.add(name)
        if not _registered:
            atexit.register(_stop_active_jobs)
            _registered = True
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    except DriverInterrupted as exc:
        _forget(name, previous)
        if signal.getsignal(exc.signum) == signal.SIG_DFL:  # not a fit nested in another: that one does this
            os.kill(os.getpid(), exc.signum)  # the default action now: the process ends here, as the signal would
        raise
    finally:
        _forget(name, previous)


def _forget(name: str, previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
    with _lock:
        _active.discard(name)


def _raise_interrupted(signum: int, frame) -> None:
    raise DriverInterrupted(signum)


def _stop_active_jobs() -> None:
    with _lock:
        names = sorted(_active)
    for name in names:
        with contextlib.suppress(Exception):  # the registry may be gone with the process's home
            jobs.finish(name, jobs.STOPPED, failure_reason="stopped: the driver process exited while the job ran")

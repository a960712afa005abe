"""The model server's compute thread: requests' decode, predict and encode, one at a time, beside the event loop.

The event loop must stay free to answer ``/ping`` while a request computes (a slow request that blocks the
loop makes the supervisor take the instance for dead and kill it, with every request it holds). One thread
keeps the serving contract's one-request-at-a-time (``MaxConcurrentTransforms`` 1, one core's worth of BLAS
threads) and the arrival order. A bare thread with a ``SimpleQueue``, answering through
``call_soon_threadsafe``, costs ~20 µs per request where ``ThreadPoolExecutor`` + ``wrap_future`` costs
~40-55 µs (measured on the 2-core box, uvloop).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("algorithms.serving")

Done = Callable[[Any, BaseException | None], None]


class ComputeThread:
    """Runs submitted calls in order on one daemon thread (started on first use)."""

    def __init__(self, name: str = "spark-ml-compute"):
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], args: tuple, done: Done) -> None:
        """Run ``fn(*args)``; then ``done(result, None)`` or ``done(None, exception)``, on the compute thread."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()
        self._queue.put((fn, args, done))

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the compute thread, awaited from the event loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.submit(fn, args, lambda result, error: loop.call_soon_threadsafe(_settle, future, result, error))
        return await future

    def shutdown(self) -> None:
        """Let the thread end after the calls already submitted."""
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, done = item
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the call
                result, error = None, exc
            try:
                done(result, error)
            except RuntimeError:  # the waiting loop is closed: nobody waits any more
                pass
            except Exception:  # a bug in a callback must not end the thread every later request waits on
                log.exception("a compute callback failed")
            del item, fn, args, done, result, error  # a request's body (a view of its slot) must not outlive it


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

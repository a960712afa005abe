"""Worker → driver event stream: log lines, metrics and progress, posted in small JSON batches.

A background thread posts every half second to the driver's monitor. If the driver cannot be reached
(e.g. a Spark Connect client outside the cluster) events are kept, bounded, and travel back with the
worker's result instead, so the job record still gets them.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import deque

from algorithms.training.reporter import Reporter

MAX_KEPT = 20_000


class RemoteReporter(Reporter):
    def __init__(self, rank: int, monitor_url: str | None, token: str | None, interval: float = 0.5):
        super().__init__()
        self.rank = rank
        self._url = monitor_url
        self._token = token
        self._pending: deque[dict] = deque(maxlen=MAX_KEPT)
        self._undelivered: deque[dict] = deque(maxlen=MAX_KEPT)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reachable = monitor_url is not None
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _emit(self, event: dict) -> None:
        event["rank"] = self.rank
        event["at"] = time.time()
        with self._lock:
            self._pending.append(event)

    def log(self, message: str) -> None:
        self._emit({"type": "log", "line": str(message)})

    def failed(self, reason: str) -> None:
        """This worker failed: tell the driver now, so it can stop the others (they may not be in a collective)."""
        self._emit({"type": "failed", "reason": reason})
        self._flush()

    def started(self, task_attempt_id: int) -> None:
        """This worker began an attempt (Spark re-runs the whole barrier stage when an executor is lost)."""
        self._emit({"type": "start", "task": int(task_attempt_id)})

    def metric(self, name: str, value: float, epoch: int | None = None, step: int | None = None) -> None:
        super().metric(name, value, epoch, step)
        if name in self.final_metrics:
            self._emit({"type": "metric", "name": name, "value": float(value), "epoch": epoch, "step": step})

    def progress(self, records: int, epoch: int | None = None, total_records: int | None = None,
                 total_epochs: int | None = None) -> None:
        self._emit({"type": "progress", "records": int(records), "epoch": epoch, "total_records": total_records,
                    "total_epochs": total_epochs})

    def _take(self) -> list[dict]:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        return batch

    def _post(self, events: list[dict]) -> bool:
        if not events or not self._reachable:
            return not events
        body = json.dumps(events).encode()
        request = urllib.request.Request(self._url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self._token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 204
        except OSError:
            self._reachable = False  # keep everything for the result instead of retrying every tick
            return False

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._flush()

    def _flush(self) -> None:
        events = self._take()
        # progress events only matter while the job runs: keep the rest if undeliverable
        if events and not self._post(events):
            self._undelivered.extend(e for e in events if e["type"] != "progress")

    def close(self) -> list[dict]:
        """Stop the sender; returns the events the driver did not receive."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._flush()
        return list(self._undelivered)

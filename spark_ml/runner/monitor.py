"""The driver's end of the worker event stream: records events in the job record, drives the progress bar."""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import jobs
from .rendezvous import MeetingPoint

MAX_EVENT_BYTES = 64 << 20  # one post of worker events (log lines, metrics); a worker posts far less at a time


class JobMonitor:
    """An HTTP endpoint (token-protected) that workers post events to and meet at, bound to the driver's address."""

    def __init__(self, job_name: str, bind_host: str, show_progress: bool = True, log_lines: bool = False):
        self.job_name = job_name
        self.token = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._progress: dict[int, dict] = {}
        self._events: list[dict] = []
        self._bar = None
        self.failure: tuple[int, str] | None = None  # the first worker failure reported live
        self._show_progress = show_progress
        self._echo_logs = log_lines
        self.meeting_point = MeetingPoint()  # where the workers exchange addresses, see rendezvous.py
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                given = (self.headers.get("Authorization") or "").encode()
                if not hmac.compare_digest(given, f"Bearer {monitor.token}".encode()):
                    self.send_response(401)
                    self.end_headers()
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if not 0 <= length <= MAX_EVENT_BYTES:
                        self.send_response(413)
                        self.end_headers()
                        return
                    body = json.loads(self.rfile.read(length))
                    if self.path.endswith("/rendezvous"):
                        answer = json.dumps(monitor.meeting_point.join(body)).encode()
                    elif self.path.endswith("/result"):
                        monitor.meeting_point.report(body)
                        self.send_response(204)
                        self.end_headers()
                        return
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                    self.end_headers()
                    return
                if self.path.endswith("/rendezvous"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                try:
                    monitor.accept(body)
                except (ValueError, KeyError, TypeError, AttributeError):
                    self.send_response(400)
                    self.end_headers()
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((bind_host, 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{bind_host}:{port}/events"
        # shutdown() waits for the loop to poll: a short interval keeps close() (once per job) from costing ~0.5 s
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def accept(self, events: list[dict]) -> None:
        with self._lock:
            self._events.extend(events)
            for event in events:
                if event.get("type") == "progress":
                    self._progress[int(event["rank"])] = event
                elif event.get("type") == "failed" and self.failure is None:
                    self.failure = (int(event["rank"]), str(event["reason"]))

    def drain(self) -> None:
        """Write received events to the job record and move the progress bar (call from the driver's thread)."""
        with self._lock:
            events, self._events = self._events, []
            progress = dict(self._progress)
        record(self.job_name, events, echo=self._echo_logs)
        if self._show_progress and progress:
            self._update_bar(progress)

    def _update_bar(self, progress: dict[int, dict]) -> None:
        done = 0
        total = 0
        epochs = None
        for event in progress.values():
            rank_total = event.get("total_records")
            epoch = event.get("epoch") or 0
            epochs = event.get("total_epochs") or epochs
            if rank_total:
                total += rank_total * (event.get("total_epochs") or 1)
                done += rank_total * epoch + event["records"]
            else:
                done += event["records"]
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total or None, unit="rec", unit_scale=True, desc=self.job_name, leave=True)
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.n = min(done, total) if total else done
        current = max((e.get("epoch") or 0) for e in progress.values())
        if epochs:
            self._bar.set_postfix_str(f"epoch {current + 1}/{epochs}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self.meeting_point.close()
        self._server.shutdown()
        self._server.server_close()
        self._end_display()

    def _end_display(self) -> None:
        """Record what arrived and close the progress bar; later events are recorded without one."""
        self.drain()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._show_progress = False

    def close_after(self, stage: threading.Thread) -> None:
        """The driver has the results but Spark is still finishing ``stage``: stop the progress bar now, and
        keep answering (a re-run attempt is told the job concluded) until the stage is over."""
        self.meeting_point.conclude()
        self._end_display()

        def close_when_done() -> None:
            stage.join()
            self.close()

        threading.Thread(target=close_when_done, name=f"{self.job_name}-monitor-close", daemon=True).start()


def record(job_name: str, events: list[dict], echo: bool = False) -> None:
    metrics, logs = [], []
    for event in events:
        kind = event.get("type")
        if kind == "metric":
            metrics.append((event["name"], float(event["value"]), event.get("rank"), event.get("epoch"),
                            event.get("step"), event.get("at", time.time())))
        elif kind == "start" and event.get("rank") == 0:
            jobs.count_attempt(job_name)
        elif kind == "log":
            logs.append((event.get("rank"), event["line"], event.get("at", time.time())))
            if echo:
                print(f"[worker {event.get('rank')}] {event['line']}")
    jobs.record_metrics(job_name, metrics)
    jobs.record_logs(job_name, logs)

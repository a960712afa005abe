"""Where a barrier stage's workers meet: through the driver's job monitor, else one ``allGather``.

Spark's ``BarrierTaskContext.allGather`` waits for its reply in one-second sleeps (measured: ~1.0 s per call on
2 cores, whatever the payload), so a 2-worker job paid a second just to exchange addresses. When the workers
can reach the driver's monitor (the normal case: it is how they stream events) they meet there instead, in a
few milliseconds; otherwise, as from a Spark Connect client outside the cluster, they use ``allGather``.

All workers must take the same way, or some would wait in ``allGather`` for peers that never come. The
monitor decides: it answers everyone with the peer list once all have arrived, or, if that has not happened
within :data:`WAIT_SECONDS` (a worker that cannot reach it never arrives), tells everyone waiting and every
latecomer of that stage attempt to fall back. A worker that cannot reach the monitor falls back at once.
If a worker's connection to the driver breaks after the others were answered, it waits in ``allGather``
alone; the others then fail to connect to it within ``barrier.CONNECT_TIMEOUT`` and the job fails saying so.

Workers that met at the driver also hand their results in there, keyed by the meeting's secret. Once every
worker of one attempt has reported success the driver has all it needs and returns, without waiting
~0.15 s more for Spark to finish the stage's bookkeeping (the shuffle that lets Spark re-run a failed barrier
stage, the result stage, the collect). From then on the meeting point is *concluded*: should Spark still re-run
the stage (an executor lost after its task succeeded), the re-run's workers are told so and stop at once,
instead of training again over the model the driver already returned.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass, field

WAIT_SECONDS = 15.0
_FALLBACK = {"fallback": True}
_CONCLUDED = {"concluded": True}
OK = "ok"


class JobConcluded(RuntimeError):
    """The driver already has every worker's result: this (re-run) attempt must not train again."""


@dataclass
class _Meeting:
    """The workers of one barrier stage attempt, by rank; ``tasks`` are their Spark task ids."""

    world: int
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    peers: dict[int, dict] = field(default_factory=dict)
    tasks: dict[int, int] = field(default_factory=dict)
    results: dict[int, dict] = field(default_factory=dict)
    abandoned: bool = False

    @property
    def complete(self) -> bool:
        return len(self.peers) == self.world

    def admits(self, task: int) -> bool:
        """Whether ``task`` can belong to this attempt: Spark launches a barrier attempt's tasks in one round,
        with consecutive ids, and a re-run's ids all come after the failed attempt's."""
        return all(abs(task - other) < self.world for other in self.tasks.values())

    def is_newer_than(self, task: int) -> bool:
        return any(other >= task + self.world for other in self.tasks.values())

    def answer(self) -> dict:
        return {"peers": [self.peers[r] for r in range(self.world)], "secret": self.secret}


class MeetingPoint:
    """The monitor's side. PySpark does not tell a task its stage attempt, so a re-run of the stage (after a
    lost executor, say) is recognised by its task ids; the meeting of the failed attempt is closed then, and
    whoever still waited there (a task being killed) is sent to ``allGather`` with that attempt."""

    def __init__(self, wait_seconds: float | None = None):
        self._wait = WAIT_SECONDS if wait_seconds is None else wait_seconds
        self._current: _Meeting | None = None
        self._changed = threading.Condition()
        self.concluded = False
        self.on_results = None  # called once with every worker's result row, when one attempt all succeeded

    def join(self, request: dict) -> dict:
        """Blocks until every worker of the attempt has joined (peer list) or the wait is over (fallback)."""
        task, rank, world = int(request["task"]), int(request["rank"]), int(request["world"])
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a world of {world}")
        peer = {"host": str(request["host"]), "port": int(request["port"])}
        deadline = time.monotonic() + self._wait
        with self._changed:
            if self.concluded:
                return _CONCLUDED
            meeting = self._current
            if meeting is not None and (meeting.is_newer_than(task) or meeting.tasks.get(rank, -1) > task):
                return _FALLBACK  # this task belongs to an attempt already replaced
            if meeting is None or meeting.world != world or not meeting.admits(task) or rank in meeting.peers:
                self._retire()
                meeting = self._current = _Meeting(world)
            if meeting.abandoned:
                return _FALLBACK
            meeting.peers[rank], meeting.tasks[rank] = peer, task
            self._changed.notify_all()
            while not meeting.complete and not meeting.abandoned:
                left = deadline - time.monotonic()
                if left <= 0:
                    meeting.abandoned = True
                    self._changed.notify_all()
                    break
                self._changed.wait(left)
            return meeting.answer() if meeting.complete else _FALLBACK

    def report(self, request: dict) -> None:
        """A worker's successful result, from the attempt whose secret it names; the last one completes it."""
        rank, result = int(request["rank"]), dict(request["result"])
        with self._changed:
            meeting = self._current
            if (self.concluded or meeting is None or not meeting.complete or meeting.abandoned
                    or not secrets.compare_digest(attempt_key(bytes.fromhex(meeting.secret)), str(request["key"]))
                    or result.get("status") != OK):
                return
            meeting.results[rank] = result
            if len(meeting.results) < meeting.world or self.on_results is None:
                return
            rows = [meeting.results[r] for r in range(meeting.world)]
            callback, self.on_results = self.on_results, None
        callback(rows)

    def conclude(self) -> None:
        """The driver returned with the results: any later attempt of the stage is turned away."""
        with self._changed:
            self.concluded = True
            self._retire()

    def _retire(self) -> None:
        if self._current is not None:
            self._current.abandoned = True
            self._changed.notify_all()

    def close(self) -> None:
        """Release anyone still waiting (the job is over)."""
        with self._changed:
            self._retire()


@dataclass
class Meeting:
    peers: list[dict]  # listening addresses, index = rank
    secret: bytes  # shared by the stage attempt's workers, to recognise each other's connections
    place: str  # "driver", "allGather", or "alone" (one worker, no driver to meet at)


def attempt_key(secret: bytes) -> str:
    """Names a stage attempt to the monitor without repeating the secret the workers authenticate with."""
    return hashlib.sha256(b"spark-ml-attempt" + secret).hexdigest()[:32]


def meet(context, host: str, port: int, monitor_url: str | None, token: str | None) -> Meeting:
    """Raises :class:`JobConcluded` when the driver already returned this job's results."""
    if monitor_url:
        answer = _ask_monitor(context, host, port, monitor_url, token)
        if answer is not None:
            return Meeting(answer["peers"], bytes.fromhex(answer["secret"]), "driver")
    if len(context.getTaskInfos()) == 1:
        return Meeting([{"host": host, "port": port}], secrets.token_bytes(32), "alone")
    rank = context.partitionId()
    secret = secrets.token_bytes(32) if rank == 0 else b""
    peers = [json.loads(m) for m in context.allGather(json.dumps({"host": host, "port": port,
                                                                  "secret": secret.hex()}))]
    return Meeting(peers, bytes.fromhex(peers[0]["secret"]), "allGather")


def rendezvous_url(events_url: str, what: str = "rendezvous") -> str:
    return events_url.rsplit("/", 1)[0] + "/" + what


def report_result(monitor_url: str, token: str | None, meeting: Meeting, rank: int, result: dict) -> None:
    """Hand a successful result in at the driver (best effort: Spark's own copy arrives anyway)."""
    body = json.dumps({"rank": rank, "key": attempt_key(meeting.secret), "result": result}).encode()
    request = urllib.request.Request(rendezvous_url(monitor_url, "result"), data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30):
            pass
    except OSError:
        pass


def _ask_monitor(context, host: str, port: int, monitor_url: str, token: str | None) -> dict | None:
    body = json.dumps({"task": context.taskAttemptId(), "rank": context.partitionId(),
                       "world": len(context.getTaskInfos()), "host": host, "port": port}).encode()
    request = urllib.request.Request(rendezvous_url(monitor_url), data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT_SECONDS + 30) as response:
            answer = json.loads(response.read())
    except (OSError, ValueError):  # unreachable or refused: the monitor will send the others to allGather too
        return None
    if answer.get("concluded"):
        raise JobConcluded("the driver already returned this job's results; this attempt stops")
    return None if answer.get("fallback") else answer

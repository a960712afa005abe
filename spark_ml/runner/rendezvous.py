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
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass, field

WAIT_SECONDS = 15.0
_FALLBACK = {"fallback": True}


@dataclass
class _Meeting:
    """The workers of one barrier stage attempt, by rank; ``tasks`` are their Spark task ids."""

    world: int
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    peers: dict[int, dict] = field(default_factory=dict)
    tasks: dict[int, int] = field(default_factory=dict)
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

    def join(self, request: dict) -> dict:
        """Blocks until every worker of the attempt has joined (peer list) or the wait is over (fallback)."""
        task, rank, world = int(request["task"]), int(request["rank"]), int(request["world"])
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a world of {world}")
        peer = {"host": str(request["host"]), "port": int(request["port"])}
        deadline = time.monotonic() + self._wait
        with self._changed:
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
    place: str  # "driver" or "allGather"


def meet(context, host: str, port: int, monitor_url: str | None, token: str | None) -> Meeting:
    if monitor_url:
        answer = _ask_monitor(context, host, port, monitor_url, token)
        if answer is not None:
            return Meeting(answer["peers"], bytes.fromhex(answer["secret"]), "driver")
    rank = context.partitionId()
    secret = secrets.token_bytes(32) if rank == 0 else b""
    peers = [json.loads(m) for m in context.allGather(json.dumps({"host": host, "port": port,
                                                                  "secret": secret.hex()}))]
    return Meeting(peers, bytes.fromhex(peers[0]["secret"]), "allGather")


def rendezvous_url(events_url: str) -> str:
    return events_url.rsplit("/", 1)[0] + "/rendezvous"


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
    return None if answer.get("fallback") else answer

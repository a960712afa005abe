"""How barrier workers meet: all at the driver's monitor, or all through allGather, never a mix."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from spark_ml.runner import rendezvous
from spark_ml.runner.monitor import JobMonitor
from spark_ml.runner.rendezvous import MeetingPoint, meet


class FakeBarrierContext:
    """The parts of BarrierTaskContext that meet() uses; allGather is a real all-or-nothing exchange."""

    def __init__(self, rank: int, world: int, board: dict, first_task: int = 100):
        self.rank, self.world, self.board, self.task = rank, world, board, first_task + rank

    def partitionId(self) -> int:  # noqa: N802 - Spark's name
        return self.rank

    def taskAttemptId(self) -> int:  # noqa: N802
        return self.task

    def getTaskInfos(self) -> list:  # noqa: N802
        return [None] * self.world

    def allGather(self, message: str) -> list[str]:  # noqa: N802
        with self.board["lock"]:
            self.board["messages"][self.rank] = message
            self.board["calls"] += 1
        self.board["barrier"].wait(timeout=30)
        return [self.board["messages"][r] for r in range(self.world)]


def board(world: int) -> dict:
    return {"lock": threading.Lock(), "messages": {}, "calls": 0, "barrier": threading.Barrier(world)}


def meet_all(world: int, urls: list[str | None], token: str | None):
    shared = board(world)
    with ThreadPoolExecutor(world) as pool:
        futures = [pool.submit(meet, FakeBarrierContext(r, world, shared), "127.0.0.1", 5000 + r, urls[r], token)
                   for r in range(world)]
        return [f.result(timeout=60) for f in futures], shared


@pytest.fixture
def monitor(spark_ml_home):
    monitor = JobMonitor("rendezvous-test", "127.0.0.1", show_progress=False)
    yield monitor
    monitor.close()


def test_workers_meet_at_the_monitor_without_allgather(monitor):
    meetings, shared = meet_all(3, [monitor.url] * 3, monitor.token)
    assert shared["calls"] == 0
    assert {m.place for m in meetings} == {"driver"}
    assert all(m.peers == [{"host": "127.0.0.1", "port": 5000 + r} for r in range(3)] for m in meetings)
    assert len({m.secret for m in meetings}) == 1 and len(meetings[0].secret) == 32


def test_an_unreachable_monitor_sends_everyone_to_allgather(monkeypatch, monitor):
    monkeypatch.setattr(rendezvous, "WAIT_SECONDS", 0.5)
    monitor.meeting_point = MeetingPoint()  # picks up the shorter wait
    # worker 1 cannot reach the driver; worker 0 can, waits, and is told to fall back
    started = time.monotonic()
    meetings, shared = meet_all(2, [monitor.url, "http://127.0.0.1:9/events"], monitor.token)
    assert shared["calls"] == 2 and {m.place for m in meetings} == {"allGather"}
    assert meetings[0].peers == meetings[1].peers == [{"host": "127.0.0.1", "port": 5000 + r, "secret": s}
                                                      for r, s in enumerate([meetings[0].secret.hex(), ""])]
    assert time.monotonic() - started < 10


def wait_until_joined(point: MeetingPoint, count: int) -> None:
    """Until the current meeting holds ``count`` workers (so what the test does next comes after)."""
    with point._changed:
        assert point._changed.wait_for(lambda: point._current is not None and len(point._current.peers) >= count,
                                       timeout=10)


def join(task: int, rank: int, world: int = 2) -> dict:
    return {"task": task, "rank": rank, "world": world, "host": f"h{task}", "port": task}


def test_a_latecomer_to_an_abandoned_meeting_falls_back_too():
    point = MeetingPoint(wait_seconds=0.2)
    assert point.join(join(10, 0)) == point.join(join(11, 1)) == {"fallback": True}


def test_a_rerun_of_the_stage_meets_afresh_and_the_failed_attempt_is_sent_away():
    point = MeetingPoint(wait_seconds=10)
    with ThreadPoolExecutor(3) as pool:
        # attempt 1 (tasks 10, 11): rank 0 waits; rank 1 died before it could join, so Spark re-runs the stage
        stale = pool.submit(point.join, join(10, 0))
        wait_until_joined(point, 1)
        # attempt 2 (tasks 12, 13): its rank 1 arrives first, while the killed rank 0 may still be waiting
        rank1 = pool.submit(point.join, join(13, 1))
        assert stale.result(timeout=5) == {"fallback": True}
        rank0 = pool.submit(point.join, join(12, 0))
        answers = [rank0.result(timeout=5), rank1.result(timeout=5)]
    assert answers[0] == answers[1] and [p["port"] for p in answers[0]["peers"]] == [12, 13]
    # the failed attempt's rank 1 turning up late does not disturb anything
    assert point.join(join(11, 1)) == {"fallback": True}


def test_the_same_rank_again_starts_a_new_meeting():
    point = MeetingPoint(wait_seconds=10)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(point.join, join(20, 0, world=3))
        wait_until_joined(point, 1)
        again = pool.submit(point.join, join(21, 0, world=3))  # ids 20 and 21 fit one attempt, ranks do not
        assert first.result(timeout=5) == {"fallback": True}
        others = [pool.submit(point.join, join(task, rank, world=3)) for task, rank in ((22, 1), (23, 2))]
        answers = [again.result(timeout=5)] + [f.result(timeout=5) for f in others]
    assert all(a == answers[0] for a in answers) and [p["port"] for p in answers[0]["peers"]] == [21, 22, 23]


def test_no_monitor_means_allgather():
    meetings, shared = meet_all(2, [None, None], None)
    assert shared["calls"] == 2 and {m.place for m in meetings} == {"allGather"}


def test_the_monitor_refuses_strangers_and_nonsense(monitor):
    import urllib.error
    import urllib.request

    url = rendezvous.rendezvous_url(monitor.url)
    body = json.dumps(join(0, 0, world=1)).encode()
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(urllib.request.Request(url, data=body, headers={"Authorization": "Bearer nope"}))
    assert denied.value.code == 401
    bad = json.dumps(join(0, 3)).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, data=bad, headers={
            "Authorization": f"Bearer {monitor.token}"}))
    assert refused.value.code == 400


def test_closing_the_monitor_releases_a_waiting_worker(monitor):
    point = monitor.meeting_point
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(point.join, join(0, 0))
        wait_until_joined(point, 1)
        point.close()
        assert waiting.result(timeout=5) == {"fallback": True}


def ok_row(rank: int) -> dict:
    return {"rank": rank, "status": "ok", "model_location": "/m" if rank == 0 else None}


def test_every_worker_handing_in_success_completes_the_job_once(monitor):
    point = monitor.meeting_point
    delivered = []
    point.on_results = delivered.append
    meetings, _ = meet_all(2, [monitor.url] * 2, monitor.token)
    # a stranger's key and a failure do not count; each success counts once, in rank order
    point.report({"rank": 0, "key": "0" * 32, "result": ok_row(0)})
    point.report({"rank": 1, "key": rendezvous.attempt_key(meetings[1].secret),
                  "result": {"rank": 1, "status": "failed"}})
    rendezvous.report_result(monitor.url, monitor.token, meetings[1], 1, ok_row(1))  # over HTTP
    assert delivered == []
    rendezvous.report_result(monitor.url, monitor.token, meetings[0], 0, ok_row(0))
    assert delivered == [[ok_row(0), ok_row(1)]]
    rendezvous.report_result(monitor.url, monitor.token, meetings[0], 0, ok_row(0))
    assert len(delivered) == 1


def test_results_of_a_replaced_attempt_do_not_count():
    point = MeetingPoint(wait_seconds=10)
    delivered = []
    point.on_results = delivered.append
    with ThreadPoolExecutor(2) as pool:
        first = [pool.submit(point.join, join(10 + r, r)) for r in range(2)]
        old = first[0].result(timeout=5)
        second = [pool.submit(point.join, join(12 + r, r)) for r in range(2)]  # Spark re-ran the stage
        new = second[0].result(timeout=5)
        second[1].result(timeout=5)
    old_key = rendezvous.attempt_key(bytes.fromhex(old["secret"]))
    point.report({"rank": 0, "key": old_key, "result": ok_row(0)})
    point.report({"rank": 1, "key": old_key, "result": ok_row(1)})
    assert delivered == []
    new_key = rendezvous.attempt_key(bytes.fromhex(new["secret"]))
    for rank in range(2):
        point.report({"rank": rank, "key": new_key, "result": ok_row(rank)})
    assert [[r["rank"] for r in rows] for rows in delivered] == [[0, 1]]


def test_a_rerun_after_the_driver_concluded_does_not_train(monitor):
    from spark_ml.runner.barrier import BarrierCollectives

    monitor.meeting_point.conclude()
    shared = board(1)
    with pytest.raises(rendezvous.JobConcluded):
        meet(FakeBarrierContext(0, 2, shared), "127.0.0.1", 5000, monitor.url, monitor.token)

    class OneWorker(FakeBarrierContext):
        def getTaskInfos(self) -> list:  # noqa: N802
            return [type("Info", (), {"address": "127.0.0.1:1"})()]

    with pytest.raises(rendezvous.JobConcluded):
        BarrierCollectives(OneWorker(0, 1, shared), "127.0.0.1", monitor.url, monitor.token)
    assert shared["calls"] == 0


def test_a_single_worker_without_a_driver_meets_nobody():
    shared = board(1)
    meeting = meet(FakeBarrierContext(0, 1, shared), "127.0.0.1", 0, None, None)
    assert meeting.place == "alone" and shared["calls"] == 0

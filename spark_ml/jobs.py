"""Training job records in the registry: status, settings, timings, metric series, logs, failure reason."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .home import connect, pid_alive

IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = "InProgress", "Completed", "Failed", "Stopping", "Stopped"
TERMINAL = (COMPLETED, FAILED, STOPPED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS training_jobs (
    name TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    status TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    channels TEXT NOT NULL,
    num_workers INTEGER NOT NULL,
    gpus_per_worker REAL NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    phases TEXT NOT NULL DEFAULT '{}',
    final_metrics TEXT NOT NULL DEFAULT '{}',
    failure_reason TEXT,
    model_location TEXT,
    driver_host TEXT,
    driver_pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS training_metrics (
    job TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, rank INTEGER, epoch INTEGER, step INTEGER,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS training_metrics_job ON training_metrics(job);
CREATE TABLE IF NOT EXISTS training_logs (
    job TEXT NOT NULL, rank INTEGER, line TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS training_logs_job ON training_logs(job);
"""


def _db():
    conn = connect()
    conn.executescript(_SCHEMA)
    return conn


def new_job_name(algorithm: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{algorithm.replace('_', '-')}-{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class TrainingJob:
    name: str
    algorithm: str
    status: str
    hyperparameters: dict[str, str]
    channels: dict[str, Any]
    num_workers: int
    gpus_per_worker: float
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)
    failure_reason: str | None = None
    model_location: str | None = None
    driver_host: str | None = None
    driver_pid: int | None = None
    attempts: int = 0

    @classmethod
    def _from_row(cls, row) -> TrainingJob:
        doc = dict(row)
        for key in ("hyperparameters", "channels", "phases", "final_metrics"):
            doc[key] = json.loads(doc[key])
        return cls(**doc)

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at


def create(name: str, algorithm: str, hyperparameters: dict[str, str], channels: dict[str, Any], num_workers: int,
           gpus_per_worker: float) -> TrainingJob:
    now = time.time()
    with _db() as conn:
        conn.execute(
            "INSERT INTO training_jobs (name, algorithm, status, hyperparameters, channels, num_workers, "
            "gpus_per_worker, created_at, started_at, driver_host, driver_pid) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (name, algorithm, IN_PROGRESS, json.dumps(hyperparameters), json.dumps(channels), num_workers,
             gpus_per_worker, now, now, socket.gethostname(), os.getpid()))
    return get(name)


def get(name: str) -> TrainingJob:
    return _unless_orphaned(_read(name))


def _read(name: str) -> TrainingJob:
    with _db() as conn:
        row = conn.execute("SELECT * FROM training_jobs WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise KeyError(f"no training job named {name!r}")
    return TrainingJob._from_row(row)


def _unless_orphaned(job: TrainingJob) -> TrainingJob:
    """A running job whose driver process on this host is gone (killed outright: nothing could record it)
    ends as Failed (Stopped if a stop was asked) the first time anyone looks."""
    if (job.status not in (IN_PROGRESS, STOPPING) or not job.driver_pid or job.driver_host != socket.gethostname()
            or pid_alive(job.driver_pid)):
        return job
    reason = (f"its driver process (pid {job.driver_pid} on this host) exited before the job ended (killed, or "
              "out of memory)")
    return finish(job.name, FAILED, failure_reason=reason)


def list_jobs(limit: int = 50, status: str | None = None) -> list[TrainingJob]:
    query = "SELECT * FROM training_jobs"
    args: tuple = ()
    if status:
        query += " WHERE status = ?"
        args = (status,)
    query += " ORDER BY created_at DESC LIMIT ?"
    with _db() as conn:
        rows = conn.execute(query, (*args, limit)).fetchall()
    return [_unless_orphaned(TrainingJob._from_row(r)) for r in rows]


def set_phase(name: str, phase: str, seconds: float) -> None:
    with _db() as conn:
        conn.execute("BEGIN IMMEDIATE")
        (phases,) = conn.execute("SELECT phases FROM training_jobs WHERE name = ?", (name,)).fetchone()
        doc = json.loads(phases)
        doc[phase] = round(doc.get(phase, 0.0) + seconds, 4)
        conn.execute("UPDATE training_jobs SET phases = ? WHERE name = ?", (json.dumps(doc), name))
        conn.execute("COMMIT")


def count_attempt(name: str) -> None:
    with _db() as conn:
        conn.execute("UPDATE training_jobs SET attempts = attempts + 1 WHERE name = ?", (name,))


def record_metrics(name: str, rows: list[tuple[str, float, int | None, int | None, int | None, float]]) -> None:
    """(metric, value, rank, epoch, step, time) rows."""
    if rows:
        with _db() as conn:
            conn.executemany("INSERT INTO training_metrics VALUES (?,?,?,?,?,?,?)", [(name, *r) for r in rows])


def record_logs(name: str, rows: list[tuple[int | None, str, float]]) -> None:
    if rows:
        with _db() as conn:
            conn.executemany("INSERT INTO training_logs VALUES (?,?,?,?)", [(name, *r) for r in rows])


def metric_series(name: str) -> list[dict]:
    with _db() as conn:
        rows = conn.execute("SELECT name, value, rank, epoch, step, at FROM training_metrics WHERE job = ? "
                            "ORDER BY at, rowid", (name,)).fetchall()
    return [dict(r) for r in rows]


def logs(name: str, tail: int | None = None) -> list[dict]:
    with _db() as conn:
        rows = conn.execute("SELECT rank, line, at FROM training_logs WHERE job = ? ORDER BY at, rowid",
                            (name,)).fetchall()
    out = [dict(r) for r in rows]
    return out[-tail:] if tail else out


def finish(name: str, status: str, *, final_metrics: dict[str, float] | None = None,
           failure_reason: str | None = None, model_location: str | None = None) -> TrainingJob:
    """Move a job to a terminal status, unless it already is in one (a stop that won the race stays)."""
    with _db() as conn:
        conn.execute("BEGIN IMMEDIATE")
        (current,) = conn.execute("SELECT status FROM training_jobs WHERE name = ?", (name,)).fetchone()
        if current not in TERMINAL:
            if current == STOPPING and status != COMPLETED:
                status = STOPPED
            conn.execute("UPDATE training_jobs SET status = ?, ended_at = ?, final_metrics = ?, failure_reason = ?, "
                         "model_location = ? WHERE name = ?",
                         (status, time.time(), json.dumps(final_metrics or {}), failure_reason, model_location, name))
        conn.execute("COMMIT")
    return get(name)


def request_stop(name: str) -> TrainingJob:
    """Ask the job's driver to stop it; a job whose driver process is gone is marked Stopped at once."""
    job = _read(name)
    if job.status in TERMINAL:
        return job
    if job.driver_host == socket.gethostname() and job.driver_pid and not pid_alive(job.driver_pid):
        return finish(name, STOPPED, failure_reason="stopped by the user (its driver process had exited)")
    with _db() as conn:
        conn.execute("UPDATE training_jobs SET status = ? WHERE name = ? AND status = ?", (STOPPING, name, IN_PROGRESS))
    return get(name)


def stop_requested(name: str) -> bool:
    with _db() as conn:
        row = conn.execute("SELECT status FROM training_jobs WHERE name = ?", (name,)).fetchone()
    return row is not None and row["status"] == STOPPING


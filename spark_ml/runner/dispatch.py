"""Run a training job across executors: one barrier stage of ``numWorkers`` tasks over a tiny DataFrame.

Only DataFrame APIs are used on the driver (``spark.range(...).mapInArrow(..., barrier=True,
profile=...)``, ``collect``, job tags), so this also runs from a Spark Connect session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field

from algorithms import fs as fsutil
from algorithms.channel import Channel

from .. import jobs
from ..home import local_model_store
from . import capacity
from .interrupts import job_interrupts, reason_of
from .monitor import JobMonitor, record
from .plan import plan_channel
from .rendezvous import OK
from .sessions import job_tags
from .spec import BUILTIN, ScriptPlan, WorkerSpec
from .worker import FAILED, PEER_FAILED, RESULT_DDL, make_task

log = logging.getLogger("spark_ml.runner")


class TrainingJobFailed(RuntimeError):
    def __init__(self, job_name: str, reason: str):
        super().__init__(f"training job {job_name} failed: {reason}")
        self.job_name = job_name
        self.reason = reason


class TrainingJobStopped(RuntimeError):
    def __init__(self, job_name: str):
        super().__init__(f"training job {job_name} was stopped")
        self.job_name = job_name


class _WorkerFailed(RuntimeError):
    """A worker reported its failure while the stage ran; the stage was cancelled."""


@dataclass
class TrainingRequest:
    algorithm: str
    hyperparameters: dict[str, str]
    channels: dict[str, Channel]
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    kind: str = BUILTIN
    script: ScriptPlan | None = None
    model_store: str | None = None  # folder or URI; the model goes to <store>/<job name>
    job_name: str | None = None
    progress: bool = True
    echo_logs: bool = False
    phases: dict[str, float] = field(default_factory=dict)  # time spent before the runner (e.g. conversion)


@dataclass
class TrainingResult:
    job_name: str
    model_location: str
    metrics: dict[str, float]
    worker_seconds: list[float] = field(default_factory=list)


def validate(request: TrainingRequest) -> None:
    if not isinstance(request.num_workers, int) or request.num_workers < 1:
        raise ValueError(f"numWorkers must be an integer ≥ 1, got {request.num_workers!r}")
    if request.gpus_per_worker < 0:
        raise ValueError(f"gpusPerWorker must be ≥ 0, got {request.gpus_per_worker!r}")
    if "train" not in request.channels:
        raise ValueError(f"a 'train' channel is required (given: {', '.join(request.channels) or 'none'})")


def run_training(spark, request: TrainingRequest) -> TrainingResult:
    """Train, record the job, return where the model is; raises TrainingJobFailed / TrainingJobStopped."""
    validate(request)
    cap = capacity.check(spark, request.num_workers, request.gpus_per_worker)
    plans = [plan_channel(name, ch, request.num_workers) for name, ch in request.channels.items()]
    name = request.job_name or jobs.new_job_name(request.algorithm)
    store = request.model_store or local_model_store()
    model_location = fsutil.join(store, name)
    channels_doc = {c.name: {"path": c.path, "content_type": c.content_type, "distribution": c.distribution,
                             "records": c.total_records} for c in plans}
    jobs.create(name, request.algorithm, request.hyperparameters, channels_doc, request.num_workers,
                request.gpus_per_worker)
    with job_interrupts(name):
        try:
            return _run_job(spark, request, cap, plans, name, model_location)
        except BaseException as exc:
            # Exceptions the paths below expect have ended the job already; anything else ends it here, so no
            # record stays InProgress: an interrupt (SIGINT, SIGTERM, exit) as Stopped, a bug as Failed
            if isinstance(exc, Exception):
                _end_unfinished(name, jobs.FAILED, f"{type(exc).__name__}: {exc}"[:1000], model_location)
            else:
                _end_unfinished(name, jobs.STOPPED, f"stopped: {reason_of(exc)}", model_location)
            raise


def _end_unfinished(name: str, status: str, reason: str, model_location: str) -> None:
    if jobs.get(name).status not in jobs.TERMINAL:
        jobs.finish(name, status, failure_reason=reason)
        _discard(model_location)


def _run_job(spark, request: TrainingRequest, cap: capacity.Capacity, plans: list, name: str,
             model_location: str) -> TrainingResult:
    for phase, seconds in request.phases.items():
        jobs.set_phase(name, phase, seconds)
    monitor = _start_monitor(spark, cap, name, request)
    checkpoint_location = f"{model_location.rstrip('/')}.checkpoints"  # beside the model, until the job ends
    spec = WorkerSpec(job_name=name, kind=request.kind, algorithm=request.algorithm,
                      hyperparameters=dict(request.hyperparameters), channels=plans, num_workers=request.num_workers,
                      gpus_per_worker=float(request.gpus_per_worker), model_location=model_location,
                      checkpoint_location=checkpoint_location,
                      monitor_url=monitor.url if monitor else None, monitor_token=monitor.token if monitor else None,
                      script=request.script)
    started = time.time()
    stage = None  # the Spark job, when the results came from the workers before it ended
    try:
        rows, stage = _run_stage(spark, cap, spec, monitor, name)
    except TrainingJobStopped:
        jobs.finish(name, jobs.STOPPED, failure_reason="stopped by the user")
        _discard(model_location)
        raise
    except _WorkerFailed as exc:
        jobs.finish(name, jobs.FAILED, failure_reason=str(exc))
        _discard(model_location)
        raise TrainingJobFailed(name, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Spark-level failure (executors lost beyond retries, …)
        reason = _spark_reason(exc)
        jobs.finish(name, jobs.FAILED, failure_reason=reason)
        _discard(model_location)
        raise TrainingJobFailed(name, reason) from exc
    finally:
        if monitor is not None and stage is not None:
            monitor.close_after(stage)
        elif monitor is not None:
            monitor.close()
        _discard(checkpoint_location)  # a finished job, good or not, is not resumed
    jobs.set_phase(name, "training", time.time() - started)
    return _conclude(name, rows, model_location)


def _start_monitor(spark, cap: capacity.Capacity, name: str, request: TrainingRequest) -> JobMonitor | None:
    """The live event endpoint, where executors can reach this process (not from a remote Connect client)."""
    from .sessions import driver_host_for_workers

    host = driver_host_for_workers(spark, cap)
    if host is None:
        return None
    try:
        return JobMonitor(name, host, show_progress=request.progress, log_lines=request.echo_logs)
    except OSError as exc:
        log.warning("no live progress for %s: cannot listen on %s (%s)", name, host, exc)
        return None


def _run_stage(spark, cap, spec: WorkerSpec, monitor: JobMonitor | None,
               name: str) -> tuple[list[dict], threading.Thread | None]:
    """The workers' result rows, and the Spark job's thread if it is still finishing (see rendezvous.py: once
    every worker handed in a success at the monitor, Spark's remaining bookkeeping is not waited for)."""
    tag = f"spark-ml-{name}"
    frame = spark.range(0, spec.num_workers, 1, numPartitions=spec.num_workers)
    profile = capacity.resource_profile(cap, spec.gpus_per_worker)
    # The shuffle after the barrier stage makes it a ShuffleMapStage: Spark re-runs a failed barrier map stage
    # as a whole (an executor lost, a worker process killed), but never a failed barrier ResultStage.
    stage = frame.mapInArrow(make_task(spec), RESULT_DDL, barrier=True, profile=profile).repartition(1)
    box: dict = {}
    over = threading.Event()  # the job ended, or every worker reported success to the monitor

    tags = job_tags(spark)

    def collect() -> None:
        tags.add(tag)  # tags are per thread: this one runs the job
        try:
            box["rows"] = [row.asDict() for row in stage.collect()]
        except BaseException as exc:  # noqa: BLE001 - handed to the driver thread
            box["error"] = exc
        finally:
            tags.remove(tag)
            over.set()

    def reported(rows: list[dict]) -> None:
        box["reported"] = rows
        over.set()

    if monitor is not None:
        monitor.meeting_point.on_results = reported
    thread = threading.Thread(target=collect, name=f"{tag}-collect", daemon=True)
    thread.start()
    stopping = cancelled = False
    try:
        while not over.is_set():
            over.wait(timeout=0.5)
            if monitor is not None:
                monitor.drain()
                if monitor.failure is not None and not cancelled:
                    cancelled = True  # the others may be busy outside any collective: stop them now
                    tags.cancel(tag)
            if not stopping and jobs.stop_requested(name):
                stopping = True
                tags.cancel(tag)
    except BaseException:  # an interrupt (SIGINT, SIGTERM) in the driver: the workers stop too
        with contextlib.suppress(Exception):
            tags.cancel(tag)
        raise
    if stopping:
        raise TrainingJobStopped(name)
    if cancelled:
        rank, reason = monitor.failure
        raise _WorkerFailed(f"worker {rank}: {reason}")
    if "reported" in box:
        return box["reported"], (thread if thread.is_alive() else None)
    if "error" in box:
        raise box["error"]
    return box["rows"], None


def _conclude(name: str, rows: list[dict], model_location: str) -> TrainingResult:
    rows = sorted(rows, key=lambda r: r["rank"])
    for row in rows:
        record(name, json.loads(row["events"] or "[]"))
    failed = [r for r in rows if r["status"] == FAILED]
    if failed or any(r["status"] != OK for r in rows):
        first = failed[0] if failed else next(r for r in rows if r["status"] != OK)
        reason = f"worker {first['rank']}: {first['reason']}"
        for row in rows:
            if row["detail"]:
                jobs.record_logs(name, [(row["rank"], f"traceback:\n{row['detail']}", time.time())])
        jobs.finish(name, jobs.FAILED, failure_reason=reason)
        _discard(model_location)
        raise TrainingJobFailed(name, reason)
    metrics = json.loads(rows[0]["metrics"] or "{}")
    location = rows[0]["model_location"]
    job = jobs.finish(name, jobs.COMPLETED, final_metrics=metrics, model_location=location)
    if job.status != jobs.COMPLETED:  # a stop request arrived as it finished
        raise TrainingJobStopped(name)
    return TrainingResult(name, location, metrics, [r["seconds"] for r in rows])


def _discard(location: str) -> None:
    """A failed or stopped job leaves no model behind (and none marked good: the manifest goes first)."""
    fs, path = fsutil.resolve(location)
    try:
        manifest = f"{path.rstrip('/')}/manifest.json"
        if fsutil.exists(fs, manifest):
            fs.delete_file(manifest)
        fsutil.delete_dir_quietly(fs, path)
    except OSError as exc:
        log.warning("could not remove %s: %s", location, exc)


def _spark_reason(exc: BaseException) -> str:
    """The informative line of a Spark failure (py4j's first line only says which call failed)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for marker in ("Job aborted due to stage failure:", "SparkException:", "Exception:", "Error:"):
        for line in lines:
            if marker in line and not line.startswith(("at ", "File ")):
                return line.lstrip(": ")[:1000]
    return lines[0][:1000] if lines else type(exc).__name__


__all__ = ["PEER_FAILED", "TrainingJobFailed", "TrainingJobStopped", "TrainingRequest", "TrainingResult",
           "run_training"]

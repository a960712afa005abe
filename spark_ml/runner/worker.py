"""What runs inside each barrier task: the training contract for one worker, and its result row."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import traceback

import pyarrow as pa

from algorithms.artifact import ArtifactManifest, write_artifact
from algorithms.channel import Channel, Shard
from algorithms.training.env import ChannelInput, TrainingEnv
from algorithms.training.gpus import assign_local_gpus, visible_gpu_addresses
from algorithms.training.reporter import failure_reason

from .barrier import BarrierCollectives, PeerFailed
from .events import RemoteReporter
from .rendezvous import OK, JobConcluded
from .spec import BUILTIN, SCRIPT, WorkerSpec

RESULT_SCHEMA = pa.schema([
    ("rank", pa.int32()), ("attempt", pa.int32()), ("status", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()), ("metrics", pa.string()), ("events", pa.string()), ("model_location", pa.string()),
    ("host", pa.string()), ("gpus", pa.string()), ("seconds", pa.float64()),
])
RESULT_DDL = ("rank int, attempt int, status string, reason string, detail string, metrics string, events string, "
              "model_location string, host string, gpus string, seconds double")
FAILED, PEER_FAILED = "failed", "peer_failed"
CONCLUDED = "concluded"  # a re-run of the stage after the driver returned: nothing done


def make_task(spec: WorkerSpec):
    """The function given to ``mapInArrow(..., barrier=True)``: one result row per worker."""

    def task(batches):
        for _ in batches:  # the input is one tiny row per worker; its content is not needed
            pass
        from pyspark import BarrierTaskContext

        yield pa.RecordBatch.from_pylist([run_worker(spec, BarrierTaskContext.get())], schema=RESULT_SCHEMA)

    return task


def _host_of(address: str) -> str:
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]") or "127.0.0.1"


def choose_gpus(spec: WorkerSpec, context, rank: int) -> list[str]:
    """GPUs Spark gave this task; in local mode (no task resources) the host's GPUs by rank."""
    if spec.gpus_per_worker <= 0:
        return []
    resources = context.resources()
    if "gpu" in resources and resources["gpu"].addresses:
        return list(resources["gpu"].addresses)
    per = int(spec.gpus_per_worker) if float(spec.gpus_per_worker).is_integer() else 1
    return assign_local_gpus(rank, per, visible_gpu_addresses())


def run_worker(spec: WorkerSpec, context) -> dict:
    import json

    started = time.time()
    # Spark reuses Python workers: put the device list back afterwards, or the next task on this process
    # (another job, other GPUs) would start from this one's
    visible_before = os.environ.get("CUDA_VISIBLE_DEVICES")
    rank = context.partitionId()
    attempt = context.attemptNumber()
    infos = context.getTaskInfos()
    address = _host_of(infos[rank].address)
    reporter = RemoteReporter(rank, spec.monitor_url, spec.monitor_token)
    collectives = None
    workdir = tempfile.mkdtemp(prefix=f"spark-ml-{spec.job_name}-{rank}-")
    result = {"rank": rank, "attempt": attempt, "status": OK, "reason": None, "detail": None, "metrics": "{}",
              "events": "[]", "model_location": None, "host": address, "gpus": "", "seconds": 0.0}
    try:
        collectives = BarrierCollectives(context, address, spec.monitor_url, spec.monitor_token)
        gpus = choose_gpus(spec, context, rank)
        result["gpus"] = ",".join(gpus)
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        env = TrainingEnv(
            hyperparameters=dict(spec.hyperparameters),
            channels={c.name: _channel_input(c, rank) for c in spec.channels},
            model_dir=os.path.join(workdir, "model"),
            output_dir=os.path.join(workdir, "output"),
            rank=rank, hosts=[f"algo-{i + 1}" for i in range(len(infos))], gpus=gpus,
            collectives=collectives, reporter=reporter, job_name=spec.job_name, address=address,
            checkpoint_dir=spec.checkpoint_location,
            num_cpus=context.cpus() if hasattr(context, "cpus") else (os.cpu_count() or 1),
        )
        os.makedirs(env.model_dir, exist_ok=True)
        os.makedirs(env.output_dir, exist_ok=True)
        reporter.started(context.taskAttemptId())
        met = f", met via {collectives.met_via}" if collectives.met_via else ""
        reporter.log(f"worker {rank}/{len(infos)} on {address} (task {context.taskAttemptId()}{met}), "
                     f"GPUs: {','.join(gpus) or 'none'}")
        model_dir, metrics, manifest = _train(spec, env, workdir)
        collectives.finish()  # every worker succeeded: only now is the model published
        if rank == 0:
            result["model_location"] = write_artifact(model_dir, manifest, spec.model_location)
        result["metrics"] = json.dumps(metrics)
    except JobConcluded as exc:
        result.update(status=CONCLUDED, reason=str(exc))
    except PeerFailed as exc:
        if exc.lost:
            # A vanished peer (crash, killed process, lost executor) fails this task too, so that Spark re-runs
            # the whole barrier stage; a ResultStage with a task that succeeded could not be re-run.
            raise RuntimeError(f"worker {rank}: {exc}") from None
        result.update(status=PEER_FAILED, reason=str(exc))
    except BaseException as exc:  # noqa: BLE001 - every failure becomes this worker's reported reason
        reason = failure_reason(exc)
        reporter.failed(reason)
        if collectives is not None:
            with contextlib.suppress(Exception):  # the others may be gone already
                collectives.fail(reason)
        result.update(status=FAILED, reason=reason, detail=traceback.format_exc()[-8000:])
    finally:
        if visible_before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible_before
        result["events"] = json.dumps(reporter.close())
        result["seconds"] = time.time() - started
        shutil.rmtree(workdir, ignore_errors=True)
    if collectives is not None:
        collectives.report(result)
    return result


def _channel_input(plan, rank: int) -> ChannelInput:
    channel = Channel(plan.path, plan.content_type, plan.distribution)
    shards = [Shard(path, records) for path, records in plan.assignments[rank]]
    counts = [r for _, r in plan.assignments[rank]]
    return ChannelInput(name=plan.name, files=[channel.shard_uri(s) for s in shards], content_type=plan.content_type,
                        feature_dim=plan.feature_dim, has_label=plan.has_label,
                        num_records=None if None in counts else sum(counts), total_records=plan.total_records,
                        distribution=plan.distribution, file_records=counts)


def _train(spec: WorkerSpec, env: TrainingEnv, workdir: str) -> tuple[str, dict, ArtifactManifest | None]:
    """Run the algorithm; returns (local model folder, final metrics, artifact manifest)."""
    if spec.kind == BUILTIN:
        from algorithms.builtin import run_builtin

        outcome = run_builtin(spec.algorithm, env)
        return env.model_dir, outcome.metrics, outcome.manifest
    from .script import run_user_code

    model_dir = run_user_code(spec, env, workdir, script_mode=spec.kind == SCRIPT)
    metrics = dict(env.reporter.final_metrics)
    manifest = ArtifactManifest(algorithm=spec.algorithm, hyperparameters=dict(spec.hyperparameters),
                                feature_dim=None, metrics=metrics, training_job=spec.job_name)
    return model_dir, metrics, manifest

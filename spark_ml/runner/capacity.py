"""Can the cluster run ``numWorkers`` tasks at once, with the GPUs asked for? Checked before launching.

Spark's barrier scheduler otherwise waits in a retry loop (15 s × 40 by default) before failing. The
check reads only session configuration (no SparkContext), so it also works from Spark Connect. The settings
it reads are static (fixed when the application starts), so they are read once per session: each read is a
round trip to the JVM, and a fit needs them three times.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass

from algorithms.training.gpus import visible_gpu_addresses

log = logging.getLogger("spark_ml.runner")


class ClusterCapacityError(RuntimeError):
    pass


@dataclass
class Capacity:
    master: str
    mode: str  # "local" | "local-cluster" | "cluster"
    slots: int | None  # tasks that can run at once (None: not determinable from configuration)
    executors: int | None
    executor_cores: int | None
    executor_gpus: float
    task_cpus: int
    dynamic_allocation: bool = False

    @property
    def host_gpus(self) -> list[str]:
        """Local mode: the GPUs of this machine (asked only when a job wants GPUs: it may run nvidia-smi)."""
        return visible_gpu_addresses() if self.mode == "local" else []


def _conf(spark, key: str, default: str | None = None) -> str | None:
    try:
        value = spark.conf.get(key, default)
    except Exception:  # noqa: BLE001 - unknown static keys raise on some versions
        return default
    return default if value in (None, "") else value


_CACHED = "_spark_ml_capacity"


def inspect(spark) -> Capacity:
    cached = getattr(spark, _CACHED, None)
    if cached is None:
        cached = _inspect(spark)
        with contextlib.suppress(AttributeError):  # a session that takes no attributes: read again next time
            setattr(spark, _CACHED, cached)
    return cached


def _inspect(spark) -> Capacity:
    master = _conf(spark, "spark.master", "local[*]")
    task_cpus = int(_conf(spark, "spark.task.cpus", "1"))
    executor_gpus = float(_conf(spark, "spark.executor.resource.gpu.amount", "0"))
    dynamic = str(_conf(spark, "spark.dynamicAllocation.enabled", "false")).lower() == "true"
    match = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]", master)
    if match:
        workers, cores = int(match.group(1)), int(match.group(2))
        return Capacity(master, "local-cluster", workers * (cores // task_cpus), workers, cores, executor_gpus,
                        task_cpus, dynamic)
    match = re.fullmatch(r"local(?:\[\s*(\*|\d+)\s*(?:,\s*\d+\s*)?\])?", master)
    if match:
        threads = match.group(1)
        n = (os.cpu_count() or 1) if threads == "*" else int(threads or 1)
        return Capacity(master, "local", n // task_cpus, 1, n, 0.0, task_cpus, dynamic)
    instances = _conf(spark, "spark.executor.instances")
    if dynamic:
        instances = _conf(spark, "spark.dynamicAllocation.maxExecutors", instances)
    cores = _conf(spark, "spark.executor.cores")
    executors = int(instances) if instances else None
    executor_cores = int(cores) if cores else None
    slots = executors * (executor_cores // task_cpus) if executors and executor_cores else None
    return Capacity(master, "cluster", slots, executors, executor_cores, executor_gpus, task_cpus, dynamic)


def check(spark, num_workers: int, gpus_per_worker: float) -> Capacity:
    """Fail at once, saying why, when ``num_workers`` barrier tasks (with their GPUs) cannot all run."""
    cap = inspect(spark)
    if cap.dynamic_allocation:
        raise ClusterCapacityError("training runs as one barrier stage, which Spark does not allow with dynamic "
                                   "allocation; set spark.dynamicAllocation.enabled=false for this application")
    if cap.slots is not None and num_workers > cap.slots:
        raise ClusterCapacityError(
            f"numWorkers={num_workers} needs {num_workers} tasks running at once, but {cap.master} runs at most "
            f"{cap.slots} (task cpus {cap.task_cpus}); lower numWorkers or add executors/cores")
    if cap.slots is None:
        log.warning("cannot tell from configuration how many tasks %s runs at once; if fewer than %d, Spark's "
                    "barrier scheduler will retry before failing", cap.master, num_workers)
    if gpus_per_worker > 0:
        _check_gpus(cap, num_workers, gpus_per_worker)
    return cap


def _check_gpus(cap: Capacity, num_workers: int, gpus_per_worker: float) -> None:
    need = num_workers * gpus_per_worker
    if cap.mode == "local":
        if not float(gpus_per_worker).is_integer():
            raise ClusterCapacityError("fractional gpusPerWorker needs a cluster manager that schedules GPUs "
                                       "(local mode gives tasks whole GPUs by rank)")
        host_gpus = cap.host_gpus
        if len(host_gpus) < need:
            raise ClusterCapacityError(
                f"numWorkers={num_workers} × gpusPerWorker={gpus_per_worker:g} needs {need:g} GPUs, but this "
                f"machine has {len(host_gpus)}; set gpusPerWorker=0 to train on CPU")
        return
    if cap.executor_gpus <= 0:
        raise ClusterCapacityError(
            f"gpusPerWorker={gpus_per_worker:g} but the executors have no GPUs "
            "(spark.executor.resource.gpu.amount is not set); set it with a discovery script, or set "
            "gpusPerWorker=0 to train on CPU")
    if cap.executors is not None:
        per_executor = int(cap.executor_gpus // gpus_per_worker)
        if per_executor * cap.executors < num_workers:
            raise ClusterCapacityError(
                f"numWorkers={num_workers} × gpusPerWorker={gpus_per_worker:g} needs {need:g} GPUs, but the "
                f"{cap.executors} executors have {cap.executor_gpus:g} each ({per_executor * cap.executors} "
                "workers' worth)")


def resource_profile(cap: Capacity, gpus_per_worker: float):
    """The stage-level profile that asks Spark for each task's GPUs (None in local mode, where Spark has none)."""
    if gpus_per_worker <= 0 or cap.mode == "local":
        return None
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    requests = TaskResourceRequests().cpus(cap.task_cpus).resource("gpu", gpus_per_worker)
    return ResourceProfileBuilder().require(requests).build

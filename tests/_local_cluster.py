"""Run Python code against a real multi-executor Spark (``local-cluster``) in a subprocess, with fake GPUs.

``local-cluster[N,C,M]`` starts a standalone master, N workers and N executor JVMs on this machine: tasks run
in separate executors, stage-level resource profiles work, and GPUs are scheduled. Starting it costs
30-50 s on a 2-core machine, so a test module should run all its cluster scenarios in one call.

Fake GPUs: each standalone worker runs the discovery script once at startup; the script hands out the next
free addresses from a counter file (under a lock), so worker 1 gets GPU "0", worker 2 GPU "1", … and every
executor (one per worker) owns distinct addresses, as on a real multi-host cluster. No CUDA device exists
behind them: code that really opens the GPU sees none.

Usage::

    result = run_on_local_cluster('''
        rows = spark.range(4).collect()
        result = {"count": len(rows)}
    ''', gpus_per_worker=1)

The code runs with ``spark`` (a SparkSession on the cluster) and ``sc`` defined, after every executor has
registered; it sets ``result`` to something JSON-serializable, which is returned. A failure in the code
raises :class:`ClusterRunError` with the subprocess's output tail. ``SPARK_ML_HOME`` is a fresh folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from typing import Any

RESULT_MARKER = "@@local-cluster-result@@ "

_DISCOVERY = """#!/usr/bin/env python3
# Fake GPU discovery for local-cluster tests: the next {per} address(es) from a counter, under a lock.
import fcntl, json, os
counter = {counter!r}
with open(counter + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    start = int(open(counter).read() or 0) if os.path.exists(counter) else 0
    with open(counter, "w") as f:
        f.write(str(start + {per}))
print(json.dumps({{"name": "gpu", "addresses": [str(start + i) for i in range({per})]}}))
"""

_PRELUDE = """
import json, os, sys, time
from pyspark.sql import SparkSession

builder = SparkSession.builder.master({master!r}).appName("spark_ml-local-cluster")
for key, value in {conf!r}.items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
sc = spark.sparkContext
sc.setLogLevel("ERROR")
deadline = time.monotonic() + {startup_timeout}
while sc._jsc.sc().getExecutorIds().size() < {workers}:  # executors register a while after the session starts
    if time.monotonic() > deadline:
        raise RuntimeError("executors did not register within {startup_timeout} s")
    time.sleep(0.5)
result = None
"""

_EPILOGUE = """
print({marker!r} + json.dumps({{"app": sc.applicationId, "result": result}}), flush=True)
spark.stop()
"""


class ClusterRunError(RuntimeError):
    pass


def pyspark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def cluster_conf(workers: int, gpus_per_worker: int, discovery_script: str | None,
                 memory_mb: int) -> dict[str, str]:
    conf = {
        "spark.test.home": pyspark_home(),
        "spark.ui.enabled": "false",
        "spark.executor.memory": f"{memory_mb}m",
        "spark.driver.memory": "1g",
        "spark.sql.shuffle.partitions": str(max(2, workers)),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",
    }
    if gpus_per_worker:
        conf.update({
            "spark.worker.resource.gpu.amount": str(gpus_per_worker),
            "spark.worker.resource.gpu.discoveryScript": discovery_script,
            "spark.executor.resource.gpu.amount": str(gpus_per_worker),
            "spark.executor.resource.gpu.discoveryScript": discovery_script,
        })
    return conf


def run_on_local_cluster(code: str, *, workers: int = 2, cores: int = 1, memory_mb: int = 1024,
                         gpus_per_worker: int = 0, conf: dict[str, str] | None = None,
                         env: dict[str, str] | None = None, timeout: float = 600,
                         startup_timeout: float = 180) -> Any:
    """Run ``code`` on ``local-cluster[workers, cores, memory_mb]``; returns the ``result`` it set."""
    with tempfile.TemporaryDirectory(prefix="spark-ml-local-cluster-") as tmp:
        script = None
        if gpus_per_worker:
            script = os.path.join(tmp, "discover_gpus.py")
            with open(script, "w") as f:
                f.write(_DISCOVERY.format(counter=os.path.join(tmp, "gpu-counter"), per=gpus_per_worker))
            os.chmod(script, 0o755)
        settings = cluster_conf(workers, gpus_per_worker, script, memory_mb)
        settings.update(conf or {})
        program = (_PRELUDE.format(master=f"local-cluster[{workers},{cores},{memory_mb}]", conf=settings,
                                   workers=workers, startup_timeout=startup_timeout)
                   + textwrap.dedent(code) + _EPILOGUE.format(marker=RESULT_MARKER))
        path = os.path.join(tmp, "snippet.py")
        with open(path, "w") as f:
            f.write(program)
        child_env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        child_env.update({
            "SPARK_HOME": pyspark_home(),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_ML_HOME": os.path.join(tmp, "spark_ml_home"),
            "PYTHONPATH": os.pathsep.join(p for p in (root, child_env.get("PYTHONPATH")) if p),
        })
        child_env.update(env or {})
        try:
            done = subprocess.run([sys.executable, path], cwd=tmp, env=child_env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ClusterRunError(f"the local-cluster run did not finish within {timeout} s:\n"
                                  f"{_tail(exc.stdout)}\n{_tail(exc.stderr)}") from None
        for line in reversed(done.stdout.splitlines()):
            if line.startswith(RESULT_MARKER):
                answer = json.loads(line[len(RESULT_MARKER):])
                _remove_work_dir(answer["app"])
                return answer["result"]
        raise ClusterRunError(f"the local-cluster run failed (exit {done.returncode}):\n{_tail(done.stdout)}\n"
                              f"{_tail(done.stderr)}")


def _remove_work_dir(app_id: str) -> None:
    """Standalone workers keep each executor's files under <spark home>/work/<app id>: remove this run's."""
    import shutil

    work = os.path.join(pyspark_home(), "work")
    shutil.rmtree(os.path.join(work, app_id), ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(work)  # only when no other run's folders are left


def _tail(text, lines: int = 60) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])

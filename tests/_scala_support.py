"""Shared plumbing of the tests/test_scala_*.py modules: the jar, and a Spark session that has it.

The shared ``spark`` fixture cannot add a jar after it started, so each module runs its Spark in a one-worker
process pool (spawned, so nothing of pytest's JVM state leaks in) whose worker holds a ``local[2]`` session
with the jar on ``spark.jars``. Test functions send plain-data functions there; errors come back as
:class:`JVMError` carrying the exception's class name and message.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALL_TIMEOUT = 300

_session = None


class JVMError(Exception):
    """An error raised in the Spark worker, carried back as its class name and message."""


def build_jar() -> str:
    """Builds the jar (a no-op when nothing changed) and returns its path."""
    out = subprocess.run(["bash", str(ROOT / "scala" / "build.sh")], capture_output=True, text=True,
                         env={**os.environ, "VENV_PYTHON": sys.executable})
    assert out.returncode == 0, f"scala/build.sh failed:\n{out.stderr}"
    path = out.stdout.strip().splitlines()[-1]
    assert Path(path).is_file()
    return path


def session():
    """The worker's Spark session (only inside the worker)."""
    return _session


def _start_session(jar: str, app: str, env: dict[str, str]) -> None:
    global _session
    os.environ.update(env)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pyspark.sql import SparkSession

    _session = (SparkSession.builder.master("local[2]").appName(app)
                .config("spark.jars", jar).config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false").config("spark.driver.memory", "2g")
                .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    _session.sparkContext.setLogLevel("OFF")


def _stop_session() -> None:
    if _session is not None:
        _session.stop()


def jvm_task(fn):
    """Runs in the worker; py4j / captured errors do not pickle, so their text comes back as a JVMError."""

    @functools.wraps(fn)
    def task(*args):
        try:
            return fn(*args)
        except Exception as exc:
            raise JVMError(f"{type(exc).__name__}: {exc}") from None

    return task


class SparkWorker:
    """A one-process pool whose worker holds a Spark session with the jar; ``call(fn, *args)`` runs there."""

    def __init__(self, jar: str, app: str, env: dict[str, str] | None = None):
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_session, initargs=(jar, app, dict(env or {})))

    def __call__(self, fn, *args):
        return self.pool.submit(fn, *args).result(timeout=CALL_TIMEOUT)

    def close(self) -> None:
        try:
            self.pool.submit(_stop_session).result(timeout=60)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def spark_submit(jar: str, main_class: str, *args: str, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess:
    """Runs one of the jar's applications with pyspark's ``spark-submit`` on ``local[2]``."""
    import pyspark

    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    return subprocess.run(
        [str(submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
         "--conf", "spark.ui.showConsoleProgress=false", "--class", main_class, jar, *args],
        capture_output=True, text=True, timeout=CALL_TIMEOUT,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, **(env or {})})


def plain(value):
    """A Row value as plain Python data (vectors as lists), picklable back to the test process."""
    from pyspark.ml.linalg import DenseVector, SparseVector

    if isinstance(value, DenseVector | SparseVector):
        return value.toArray().tolist()
    return value

"""A fit that ends without finishing (SIGINT, SIGTERM, the driver exiting or dying) leaves a job record that says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from spark_ml import jobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A driver running a script-mode fit whose script sleeps; the channel is written without Spark.
_DRIVER = """
import os, sys
import numpy as np
from pyspark.sql import SparkSession
from algorithms import tensor_codec
from algorithms.channel import MANIFEST, Channel, Manifest, Shard
from spark_ml.estimators.script import archive_source
from spark_ml.runner import SCRIPT, ScriptPlan, TrainingRequest, run_training

work = sys.argv[1]
os.makedirs(os.path.join(work, "channel"))
data = tensor_codec.encode_dense(np.ones((4, 3), np.float32))
with open(os.path.join(work, "channel", "part-00000.pbr"), "wb") as f:
    f.write(data)
manifest = Manifest("application/x-recordio-protobuf", (Shard("part-00000.pbr", 4, len(data)),), 3)
with open(os.path.join(work, "channel", MANIFEST), "w") as f:
    f.write(manifest.to_json())
os.makedirs(os.path.join(work, "src"))
with open(os.path.join(work, "src", "train.py"), "w") as f:
    f.write("import os, time\\nopen(%r, 'w').close()\\ntime.sleep(600)\\n" % os.path.join(work, "started"))
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.driver.memory", "512m").getOrCreate())
source = archive_source(os.path.join(work, "src"))
request = TrainingRequest(algorithm="script", hyperparameters={}, num_workers=1, kind=SCRIPT, progress=False,
                          channels={"train": Channel.open(os.path.join(work, "channel"))}, job_name="interrupt-me",
                          script=ScriptPlan(entry_point="train.py", source_archive=source))
run_training(spark, request)
"""


@pytest.mark.parametrize("signum, reason", [(signal.SIGINT, "interrupted in the driver (SIGINT)"),
                                            (signal.SIGTERM, "the driver received SIGTERM")])
def test_a_signal_to_the_driver_stops_its_job(tmp_path, monkeypatch, signum, reason):
    home = tmp_path / "home"
    env = dict(os.environ, SPARK_ML_HOME=str(home), PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, str(work)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not (work / "started").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (work / "started").exists(), proc.communicate(timeout=30)[0].decode()[-3000:]
        proc.send_signal(signum)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signum, output[-3000:]  # the driver still ends as the signal ends a process
    monkeypatch.setenv("SPARK_ML_HOME", str(home))
    job = jobs.get("interrupt-me")
    assert job.status == jobs.STOPPED, (job.status, job.failure_reason, output[-3000:])
    assert job.failure_reason.startswith(f"stopped: {reason}"), job.failure_reason
    assert job.ended_at is not None


def test_a_job_whose_driver_died_is_marked_failed_when_next_read(spark_ml_home):
    jobs.create("orphan", "kmeans", {}, {}, 1, 0.0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with jobs._db() as conn:
        conn.execute("UPDATE training_jobs SET driver_pid = ? WHERE name = 'orphan'", (dead.pid,))
    job = jobs.get("orphan")
    assert job.status == jobs.FAILED
    assert job.failure_reason == (f"its driver process (pid {dead.pid} on this host) exited before the job ended "
                                  "(killed, or out of memory)")
    assert [j.status for j in jobs.list_jobs()] == [jobs.FAILED]
    jobs.create("alive", "kmeans", {}, {}, 1, 0.0)  # this process: alive, left alone
    assert jobs.get("alive").status == jobs.IN_PROGRESS


_EXITING_DRIVER = """
import sys, threading, time
from spark_ml import jobs
from spark_ml.runner.interrupts import job_interrupts

jobs.create("left-behind", "kmeans", {}, {}, 1, 0.0)
entered = threading.Event()

def fit():  # what run_training does around its stage, in a thread the main thread does not wait for
    with job_interrupts("left-behind"):
        entered.set()
        time.sleep(600)

threading.Thread(target=fit, daemon=True).start()
entered.wait(30)
sys.exit(0)
"""


def test_a_driver_exiting_mid_fit_stops_the_job(tmp_path, monkeypatch):
    env = dict(os.environ, SPARK_ML_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_EXITING_DRIVER)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("SPARK_ML_HOME", str(tmp_path))
    job = jobs.get("left-behind")
    assert (job.status, job.failure_reason) == (jobs.STOPPED, "stopped: the driver process exited while the job ran")
    assert json.loads(json.dumps(job.final_metrics)) == {}

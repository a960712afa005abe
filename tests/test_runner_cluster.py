"""The runner on real executors (local-cluster, 2 workers, one fake GPU each), all scenarios in one subprocess."""

import pytest
from _local_cluster import run_on_local_cluster

pytestmark = pytest.mark.cluster

SCENARIOS = r'''
import os, signal, tempfile, time
import numpy as np
from pyspark.ml.linalg import Vectors
import spark_ml
from spark_ml import jobs
from spark_ml.estimators.script import archive_source
from spark_ml.runner import SCRIPT, ScriptPlan, TrainingJobFailed, TrainingRequest, run_training
from spark_ml.runner.capacity import ClusterCapacityError

work = tempfile.mkdtemp(prefix="runner-cluster-")
rng = np.random.default_rng(0)
x = rng.normal(size=(400, 5))
df = spark.createDataFrame([(Vectors.dense(r), float(r[0] > 0)) for r in x], ["features", "label"]).repartition(4)
channel = spark_ml.to_channel(df, os.path.join(work, "train"))
result = {}

def script(name, code):
    folder = os.path.join(work, name)
    os.makedirs(folder)
    with open(os.path.join(folder, "train.py"), "w") as f:
        f.write(code)
    return archive_source(folder)

def request(source, **kw):
    return TrainingRequest("probe", {}, {"train": channel}, num_workers=2, kind=SCRIPT, progress=False,
                           script=ScriptPlan(entry_point="train.py", source_archive=source), **kw)

# 1. GPUs: each worker gets its own address from its executor's task resources.
gpu_probe = script("gpu", "import os\nprint('visible=' + os.environ['CUDA_VISIBLE_DEVICES'] + ' sm=' + "
                          "os.environ['SM_NUM_GPUS'] + ' host=' + os.environ['SM_CURRENT_HOST'])\n")
done = run_training(spark, request(gpu_probe, gpus_per_worker=1))
result["gpu_lines"] = sorted(l["line"] for l in jobs.logs(done.job_name) if l["line"].startswith("visible="))
result["executors"] = sorted({l["line"].split(" on ")[1].split(" ")[0] for l in jobs.logs(done.job_name)
                              if l["line"].startswith("worker ")})

# 2. More GPUs than the executors have: refused at once, nothing launched.
started = time.time()
try:
    run_training(spark, request(gpu_probe, gpus_per_worker=2))
    result["too_many"] = "no error"
except ClusterCapacityError as exc:
    result["too_many"] = str(exc)
result["too_many_seconds"] = time.time() - started

# 3. A worker's Python process is killed mid-training (once): Spark re-runs the barrier stage, the job completes.
marker = os.path.join(work, "killed-once")
killer = script("kill", f"""
import os, signal, time
if os.environ['SM_CURRENT_HOST'] == 'algo-2' and not os.path.exists({marker!r}):
    open({marker!r}, 'w').close()
    os.kill(os.getppid(), signal.SIGKILL)   # the Spark Python worker running this task
    time.sleep(60)
open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.txt'), 'w').write(os.environ['SM_CURRENT_HOST'])
""")
done = run_training(spark, request(killer))
job = jobs.get(done.job_name)
result["retry"] = {"status": job.status, "attempts": job.attempts, "killed": os.path.exists(marker),
                   "model": open(os.path.join(done.model_location, "model.txt")).read(),
                   "met": [l["line"].split("met via ")[1].split(")")[0] for l in jobs.logs(done.job_name)
                           if "met via " in l["line"]]}

# 4. A worker raises: Failed with its reason, no artifact, no script process left behind.
pids = os.path.join(work, "pids")
os.makedirs(pids)
failing = script("fail", f"""
import os, sys, time
open(os.path.join({pids!r}, str(os.getpid())), 'w').close()
if os.environ['SM_CURRENT_HOST'] == 'algo-1':
    sys.exit('out of patience at step 7')
time.sleep(600)   # the other worker is stuck until the job ends
""")
try:
    run_training(spark, request(failing, job_name="fails"))
    result["failure"] = "no error"
except TrainingJobFailed as exc:
    result["failure"] = exc.reason
job = jobs.get("fails")
result["failed_job"] = {"status": job.status, "reason": job.failure_reason, "model": job.model_location}
deadline = time.time() + 30
alive = [int(p) for p in os.listdir(pids)]
while alive and time.time() < deadline:
    alive = [p for p in alive if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    time.sleep(0.2)
result["left_running"] = alive

# 5. A built-in across the two executors.
model = spark_ml.LinearLearnerBinaryClassifier(numWorkers=2, epochs=10, miniBatchSize=20,
                                              showProgress=False).fit(channel)
scored = model.transform(df).collect()
result["builtin_accuracy"] = float(np.mean([r.predicted_label == r.label for r in scored]))
'''


@pytest.fixture(scope="module")
def cluster_run():
    return run_on_local_cluster(SCENARIOS, workers=2, cores=1, gpus_per_worker=1)


def test_each_worker_gets_its_own_gpu_address(cluster_run):
    assert cluster_run["gpu_lines"] == ["visible=0 sm=1 host=algo-1", "visible=1 sm=1 host=algo-2"] or \
        cluster_run["gpu_lines"] == ["visible=0 sm=1 host=algo-2", "visible=1 sm=1 host=algo-1"]


def test_asking_for_more_gpus_than_exist_fails_fast(cluster_run):
    assert "needs 4 GPUs" in cluster_run["too_many"] and "1 each" in cluster_run["too_many"]
    assert cluster_run["too_many_seconds"] < 5


def test_killed_worker_process_reruns_the_stage_and_completes(cluster_run):
    retry = cluster_run["retry"]
    assert retry["killed"] and retry["status"] == "Completed"
    assert retry["attempts"] >= 2
    assert retry["model"] == "algo-1"
    # the re-run's workers met at the driver again: the failed attempt's meeting did not get in the way
    assert len(retry["met"]) >= 2 and set(retry["met"]) == {"driver"}


def test_failing_worker_fails_the_job_and_leaves_nothing_running(cluster_run):
    assert cluster_run["failure"].startswith("worker 0:") and "out of patience at step 7" in cluster_run["failure"]
    job = cluster_run["failed_job"]
    assert job["status"] == "Failed" and job["model"] is None
    assert cluster_run["left_running"] == []


def test_builtin_trains_across_executors(cluster_run):
    assert cluster_run["builtin_accuracy"] > 0.95

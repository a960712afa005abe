"""XGBoost on real executors (local-cluster, two workers with one fake GPU each), in one subprocess.

- A CPU job trains across the two executors through XGBoost's collective and scores like single-process
  XGBoost on the same data.
- A GPU job: each worker gets its own GPU address from Spark, passes ``device="cuda"`` to XGBoost with
  ``CUDA_VISIBLE_DEVICES`` set to that address; with no CUDA device behind the fake addresses, XGBoost
  cannot use CUDA, and the job fails saying so (instead of silently training on the CPU).
"""

import re
import shutil

import numpy as np
import pytest
import xgboost as xgb
from _local_cluster import run_on_local_cluster
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

pytestmark = pytest.mark.cluster

SCENARIOS = """
import numpy as np
from pyspark.ml.linalg import Vectors
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import spark_ml
from spark_ml import jobs

x, y = load_breast_cancer(return_X_y=True)
xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
frame = lambda a, b: spark.createDataFrame([(Vectors.dense(r), float(t)) for r, t in zip(a, b)], ["features", "label"])
train, validation = frame(xt, yt), frame(xv, yv)
params = dict(numRound=30, maxDepth=3, eta=0.3, evalMetric="auc", numWorkers=2, showProgress=False)

model = spark_ml.XGBoostClassifier(**params).fit({"train": train, "validation": validation})
scored = model.transform(validation).select("label", "score").collect()
series = jobs.metric_series(model.trainingJobName)
cpu = {"auc": roc_auc_score([r.label for r in scored], [r.score for r in scored]),
       "metrics": model.metrics, "rounds": sorted({m["epoch"] for m in series if m["name"] == "validation:auc"}),
       "logs": [l["line"] for l in jobs.logs(model.trainingJobName)]}

gpu = {}
try:
    spark_ml.XGBoostClassifier(gpusPerWorker=1, **params).fit({"train": train, "validation": validation})
    gpu["failed"] = False
except spark_ml.TrainingJobFailed as exc:
    gpu["failed"] = True
    gpu["reason"] = exc.reason
    gpu["logs"] = [l["line"] for l in jobs.logs(exc.job_name)]
result = {"cpu": cpu, "gpu": gpu}
"""


@pytest.fixture(scope="module")
def cluster_run():
    return run_on_local_cluster(SCENARIOS, workers=2, cores=1, gpus_per_worker=1)


def test_two_executors_train_like_one_process(cluster_run):
    x, y = load_breast_cancer(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    reference = xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": 0},
                          xgb.DMatrix(xt.astype(np.float32), yt), num_boost_round=30)
    expected = roc_auc_score(yv, reference.predict(xgb.DMatrix(xv.astype(np.float32))))
    cpu = cluster_run["cpu"]
    assert abs(cpu["auc"] - expected) <= 0.005
    assert cpu["rounds"] == list(range(30))
    # distributed, XGBoost combines the workers' own AUCs rather than ranking all rows: close, not exact
    assert abs(cpu["metrics"]["validation:auc"] - cpu["auc"]) <= 0.005
    assert sum("worker 1 of 2" in line or "worker 2 of 2" in line for line in cpu["logs"]) == 2


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a real GPU is present: the fake addresses "
                    "would reach it")
def test_gpu_job_gives_each_worker_its_own_gpu_and_says_xgboost_cannot_use_cuda(cluster_run):
    gpu = cluster_run["gpu"]
    assert gpu["failed"]
    text = "\n".join([gpu["reason"], *gpu["logs"]])
    # Spark gave the two tasks distinct GPUs, and the worker that failed first (its failure cancels the other)
    # handed XGBoost device=cuda on its own one.
    assert "GPUs: 0" in text and "GPUs: 1" in text
    failed = re.search(r"worker (\d) was given device=cuda \(GPU (\d) from Spark, CUDA_VISIBLE_DEVICES=(\d)\)",
                       gpu["reason"])
    assert failed, gpu["reason"]
    rank, address, visible = failed.groups()
    assert address == visible
    assert any(line.startswith(f"worker {rank}/2 ") and line.endswith(f"GPUs: {address}") for line in gpu["logs"])
    # XGBoost's own words about the missing device are in the failure reason.
    assert "cannot use CUDA" in gpu["reason"]
    assert "GPU" in gpu["reason"].split("cannot use CUDA:", 1)[1]

"""Training and channels from a Spark Connect session (as Databricks shared/serverless notebooks use)."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession
    from sklearn.datasets import load_digits

    import spark_ml
    from spark_ml import jobs

    spark = SparkSession.builder.remote("local[2]").getOrCreate()
    out = {"session": type(spark).__module__}
    digits = load_digits()
    df = spark.createDataFrame([(Vectors.dense(x), float(y)) for x, y in zip(digits.data, digits.target)],
                               ["features", "label"]).repartition(2)
    channel = spark_ml.to_channel(df, sys.argv[1])
    out["records"] = channel.num_records
    back = spark.read.format("recordio-protobuf").load(channel.path)
    out["read_back"] = back.count()
    model = spark_ml.KMeans(k=10, numWorkers=2, showProgress=False).fit(channel)
    out["job_status"] = jobs.get(model.trainingJobName).status
    scored = model.transform(df).select("closest_cluster").collect()
    out["clusters"] = sorted({int(r.closest_cluster) for r in scored})
    centers = model.clusterCenters
    x = digits.data
    out["inertia"] = float(((x[:, None, :] - centers[None]) ** 2).sum(-1).min(1).sum())
    spark.stop()
    print("RESULT " + json.dumps(out))
""")


def test_train_and_score_through_spark_connect(tmp_path):
    env = dict(os.environ, SPARK_ML_HOME=str(tmp_path / "home"), PYSPARK_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "channel")], env=env, capture_output=True,
                          text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["session"].startswith("pyspark.sql.connect")
    assert out["records"] == 1797 and out["read_back"] == 1797
    assert out["job_status"] == "Completed"
    assert out["clusters"] == list(range(10))
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits

    reference = KMeans(10, n_init=10, random_state=0).fit(load_digits().data).inertia_
    assert out["inertia"] <= reference * 1.02

"""The main end-to-end job on local Spark (``spark-ml demo`` / ``make demo``):
a real dataset → channel → K-Means and Linear Learner trained on two workers → both deployed behind one
endpoint as A/B variants → a DataFrame scored through it, with the traffic split and latencies."""

from __future__ import annotations

import os
import sys
import tempfile
import time


def _digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("the demo uses scikit-learn's bundled datasets: pip install scikit-learn") from None
    return load_digits()


def _step(title: str) -> float:
    print(f"\n== {title}")
    return time.perf_counter()


def run(master: str = "local[2]", workdir: str | None = None, spark=None, endpoint_name: str = "spark-ml-demo",
        print_fn=print) -> dict:
    """Run the demo; with ``spark`` given it uses (and leaves running) that session."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    import spark_ml
    from spark_ml.hosting import run_ab_demo

    own = spark is None
    if own:
        spark = (SparkSession.builder.master(master).appName("spark-ml demo")
                 .config("spark.ui.showConsoleProgress", "false").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
    workdir = workdir or tempfile.mkdtemp(prefix="spark-ml-demo-")
    try:
        digits = _digits()
        rows = [(Vectors.dense(x), float(y)) for x, y in zip(digits.data, digits.target, strict=True)]
        df = spark.createDataFrame(rows, ["features", "label"]).repartition(4).cache()
        print_fn(f"DataFrame: {df.count()} handwritten digits (scikit-learn's copy of the UCI set), 64 features")

        started = _step("DataFrame → recordIO-protobuf channel")
        channel = spark_ml.to_channel(df, os.path.join(workdir, "digits"))
        print_fn(f"{channel} in {time.perf_counter() - started:.2f} s")
        back = spark.read.format("recordio-protobuf").load(channel.path)
        print_fn(f"read back {back.count()} records")

        started = _step("K-Means (k=10) on 2 workers")
        kmeans = spark_ml.KMeans(k=10, numWorkers=2, showProgress=False).fit(channel)
        print_fn(f"job {kmeans.trainingJobName} in {time.perf_counter() - started:.1f} s; metrics {kmeans.metrics}")

        started = _step("Linear Learner (multiclass) on 2 workers")
        linear = spark_ml.LinearLearnerMultiClassClassifier(numClasses=10, epochs=10, numWorkers=2,
                                                            showProgress=False).fit(channel)
        scored = linear.transform(df)
        accuracy = scored.filter("predicted_label = label").count() / df.count()
        print_fn(f"job {linear.trainingJobName} in {time.perf_counter() - started:.1f} s; "
                 f"training-set accuracy {accuracy:.3f}")

        _step("Both models behind one endpoint (variants kmeans / linear, 50/50), scored from Spark")
        outcome = run_ab_demo(df, {"kmeans": kmeans.getOrDefault(kmeans.modelLocation),
                                   "linear": linear.getOrDefault(linear.modelLocation)},
                              endpoint_name=endpoint_name, print_fn=print_fn)
        return {"channel": channel, "kmeans": kmeans, "linear": linear, "accuracy": accuracy, "endpoint": outcome}
    finally:
        if own:
            spark.stop()
        print_fn(f"\ndemo files are in {workdir}; training jobs: spark-ml jobs list")

"""Our XGBoostClassifier vs ``xgboost.spark.SparkXGBClassifier``: same data, parameters and local[2] session.

    .venv/bin/python benchmarks/xgboost.py [--rows 1000000] [--features 50] [--rounds 100]

The data (dense features, binary label from a noisy non-linear rule) is generated in the JVM, cached and
counted before either side runs. Both train with 2 workers, 1 thread each (one Spark task CPU), hist, the
same depth, learning rate, rounds and seed. Our time includes the DataFrame → recordIO-protobuf channel
conversion; theirs includes their Arrow → pandas → DMatrix path. AUC is measured on the same held-out
rows with Spark's BinaryClassificationEvaluator on each model's rawPrediction. Prints both, and the ratio.

The session loads the spark-ml Scala jar (built by scala/build.sh when missing) so the conversion uses the JVM
recordIO-protobuf writer, as a deployment would; ``--python-writer`` uses the Python data source instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: benchmarks/algorithms.py, xgboost.py must not shadow packages
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


ROOT = Path(__file__).resolve().parent.parent


def scala_jar() -> str:
    """The spark-ml Scala jar, built (incrementally) by scala/build.sh."""
    out = subprocess.run(["bash", str(ROOT / "scala" / "build.sh")], check=True, capture_output=True, text=True,
                         env={**os.environ, "VENV_PYTHON": sys.executable})
    return out.stdout.strip().splitlines()[-1]


def make_data(spark, rows: int, features: int, seed: int):
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    columns = [F.rand(seed + i) * 2 - 1 for i in range(features)]
    frame = spark.range(rows, numPartitions=2).select(F.array(*columns).alias("x"))
    x = [F.col("x")[i] for i in range(8)]
    signal = x[0] + 2 * x[1] * x[2] - x[3] + F.when(x[4] > 0.3, 1.0).otherwise(-0.5) + F.sin(3 * x[5]) + x[6] * x[7]
    noisy = signal + F.randn(seed + 999) * 0.8
    return frame.select(array_to_vector("x").alias("features"), (noisy > 0).cast("double").alias("label"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--eta", type=float, default=0.3)
    parser.add_argument("--python-writer", action="store_true", help="convert with the Python data source")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, alternating which goes first; the "
                        "best time of each is compared (the machine may be shared)")
    args = parser.parse_args()

    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.sql import SparkSession
    from xgboost.spark import SparkXGBClassifier

    import spark_ml
    from spark_ml import jobs

    os.environ.setdefault("SPARK_ML_HOME", tempfile.mkdtemp(prefix="spark-ml-bench-"))
    builder = (SparkSession.builder.master("local[2]").appName("xgboost-benchmark")
               .config("spark.driver.memory", "8g").config("spark.ui.enabled", "false")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100000"))
    if not args.python_writer:
        builder = builder.config("spark.jars", scala_jar())
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    print(f"channel writer: {spark_ml.register(spark)}")
    train = make_data(spark, args.rows, args.features, 1).cache()
    test = make_data(spark, args.test_rows, args.features, 2).cache()
    print(f"data: {train.count():,} train rows, {test.count():,} test rows, {args.features} features, "
          f"positive rate {train.agg({'label': 'avg'}).first()[0]:.3f}")
    evaluator = BinaryClassificationEvaluator(rawPredictionCol="rawPrediction", labelCol="label")

    ours = spark_ml.XGBoostClassifier(numRound=args.rounds, maxDepth=args.depth, eta=args.eta, treeMethod="hist",
                                      seed=0, numWorkers=2, showProgress=False)
    theirs = SparkXGBClassifier(features_col="features", label_col="label", num_workers=2, n_estimators=args.rounds,
                                max_depth=args.depth, learning_rate=args.eta, tree_method="hist", random_state=0,
                                device="cpu")
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "theirs": []}
    for run in range(args.repeat):
        order = (("theirs", theirs), ("ours", ours)) if run % 2 == 0 else (("ours", ours), ("theirs", theirs))
        for name, estimator in order:
            start = time.perf_counter()
            model = estimator.fit(train)
            seconds = time.perf_counter() - start
            auc = evaluator.evaluate(model.transform(test))
            results[name].append((seconds, auc))
            detail = ""
            if name == "ours":
                training = jobs.get(model.trainingJobName).phases.get("training", 0.0)
                detail = f"   (conversion {seconds - training:.1f} s, training job {training:.1f} s)"
            print(f"{name:>6}: fit {seconds:7.1f} s   test AUC {auc:.5f}{detail}", flush=True)
    (ours_s, ours_auc), (theirs_s, theirs_auc) = min(results["ours"]), min(results["theirs"])
    print(f"best of {args.repeat}: ours {ours_s:.1f} s, theirs {theirs_s:.1f} s; ratio ours/theirs: "
          f"{ours_s / theirs_s:.3f} (target ≤ 1.10)   AUC difference: {abs(ours_auc - theirs_auc):.5f} "
          "(target ≤ 0.002)")
    spark.stop()


if __name__ == "__main__":
    main()

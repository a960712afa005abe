"""Scoring on the JVM vs in Python: native ArtifactModel vs the Python Spark Model, and the JVM EndpointModel
vs the Python one through the same spark_ml endpoint.

    .venv/bin/python benchmarks/score_jvm.py [--rows 500000] [--dim 100] [--endpoint-rows 100000] [--repeats 3]

Builds the Scala jar if needed, starts local[2] with it, caches rows x dim dense vectors, and times each
scorer into a noop sink (interleaved runs, best of --repeats). Models are built from random arrays (K-Means
k=10, PCA 10 components, Linear Learner binary), saved as artifacts the way training saves them. The endpoint
runs one model-server instance behind the router on the same two cores as Spark, so its numbers say more
about the clients' overhead than about a real deployment. Speed lives here, not in the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: benchmarks/algorithms.py, xgboost.py must not shadow packages
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORES = 2


def build_jar() -> str:
    out = subprocess.run(["bash", str(ROOT / "scala" / "build.sh")], check=True, capture_output=True, text=True,
                         env={**os.environ, "VENV_PYTHON": sys.executable})
    return out.stdout.strip().splitlines()[-1]


def artifacts(root: str, dim: int) -> dict[str, str]:
    from algorithms.builtin import save_model
    from algorithms.builtin.kmeans.algorithm import KMeansModel
    from algorithms.builtin.linear_learner.model import LinearLearnerModel
    from algorithms.builtin.pca import PCAModel

    rng = np.random.default_rng(0)
    v, _ = np.linalg.qr(rng.normal(size=(dim, 10)))
    models = {
        "kmeans": KMeansModel({"k": "10"}, dim, rng.normal(size=(10, dim))),
        "pca": PCAModel({"num_components": "10"}, dim, np.arange(10, 0, -1.0), v, rng.normal(size=(1, dim)),
                        1000.0, 100.0),
        "linear-learner": LinearLearnerModel({"predictor_type": "binary_classifier", "loss": "logistic"}, dim,
                                             rng.normal(size=dim), np.array([0.1])),
    }
    out = {}
    for name, model in models.items():
        out[name] = os.path.join(root, name)
        save_model(model, out[name])
    return out


def best_of(runs: dict[str, object], repeats: int) -> dict[str, list[float]]:
    times = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so warm-up and machine load hit every scorer alike
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def report(title: str, times: dict[str, list[float]], rows: int) -> None:
    print(f" {title}:")
    for name, runs in times.items():
        best = min(runs)
        print(f"  {name:44s} best {best:6.2f}s  (runs {', '.join(f'{t:.2f}' for t in runs)})  "
              f"{rows / best:12,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--endpoint-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="score_jvm_")
    os.environ["SPARK_ML_HOME"] = os.path.join(scratch, "home")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    jar = build_jar()
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as F

    import spark_ml
    from spark_ml import hosting
    from spark_ml.hosting import EndpointModel, ProductionVariant

    spark = (SparkSession.builder.master(f"local[{CORES}]").appName("score_jvm")
             .config("spark.jars", jar).config("spark.driver.memory", "4g")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    jvm = spark.sparkContext._jvm
    try:
        values = F.array(*[F.randn(seed=i) for i in range(args.dim)])
        df = spark.range(args.rows, numPartitions=CORES).select(array_to_vector(values).alias("features")).cache()
        df.count()
        small = df.limit(args.endpoint_rows).cache()
        small.count()

        def sink(frame) -> None:
            frame.write.format("noop").mode("overwrite").save()

        locations = artifacts(os.path.join(scratch, "models"), args.dim)
        python_models = {"kmeans": spark_ml.KMeansModel, "pca": spark_ml.PCAModel,
                         "linear-learner": spark_ml.LinearLearnerBinaryClassifierModel}
        runs = {}
        for name, location in locations.items():
            python_model = python_models[name](modelLocation=location)
            jvm_model = jvm.sparkml.scoring.ArtifactModel.load(location)
            runs[f"{name}: Python Model (mapInArrow)"] = lambda m=python_model: sink(m.transform(df))
            runs[f"{name}: JVM ArtifactModel"] = lambda m=jvm_model: sink(DataFrame(m.transform(df._jdf), spark))
        print(f"{args.rows:,} rows x {args.dim} dense values, local[{CORES}], cached; best of {args.repeats}")
        report("native scoring (noop sink)", best_of(runs, args.repeats), args.rows)

        hosting.create_model("bench", locations["kmeans"])
        hosting.create_endpoint_config("bench", [ProductionVariant("AllTraffic", "bench")])
        url = hosting.create_endpoint("bench", "bench", router_workers=1).url
        runs = {}
        for serializer in ("protobuf", "csv"):
            python_endpoint = EndpointModel(endpoint=url, serializer=serializer, concurrency=2)
            jvm_endpoint = (jvm.sparkml.endpoint.EndpointModel().setEndpoint(url).setSerializer(serializer)
                            .setConcurrency(2))
            runs[f"kmeans {serializer}: Python EndpointModel"] = lambda m=python_endpoint: sink(m.transform(small))
            runs[f"kmeans {serializer}: JVM EndpointModel"] = \
                lambda m=jvm_endpoint: sink(DataFrame(m.transform(small._jdf), spark))
        report(f"through one endpoint instance, {args.endpoint_rows:,} rows (noop sink)",
               best_of(runs, args.repeats), args.endpoint_rows)
        hosting.delete_endpoint("bench")
    finally:
        spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

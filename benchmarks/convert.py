"""DataFrame → channel conversion: our recordio-protobuf write vs Spark's own Parquet write, same run.

    .venv/bin/python benchmarks/convert.py [--rows 1000000] [--repeat 2]

Prints, for dense (rows × 100 float) and sparse (rows × 100k dims, 50 non-zeros per row) data: our
write, Spark's Parquet write of the same cached DataFrame, and our read-back; rows/s, values/s per
core, and the Parquet/ours ratio. Also the vectorized encoder alone on one core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file: benchmarks/algorithms.py, xgboost.py must not shadow packages
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def encoder_alone(rows: int) -> tuple[float, float]:
    import scipy.sparse as sp

    from algorithms.tensor_codec import encode_dense, encode_sparse

    rng = np.random.default_rng(0)
    x = rng.random((min(rows, 1_000_000), 100), dtype=np.float32)
    y = rng.integers(0, 2, len(x)).astype(np.float32)
    step = 10_000
    start = time.perf_counter()
    for i in range(0, len(x), step):
        encode_dense(x[i : i + step], y[i : i + step])
    dense_rate = x.size / (time.perf_counter() - start)
    n = 200_000
    cols = np.sort(rng.integers(0, 100_000, (n, 50)), axis=1)
    m = sp.csr_matrix((rng.random(n * 50, dtype=np.float32), cols.reshape(-1), np.arange(0, n * 50 + 1, 50)),
                      shape=(n, 100_000))
    start = time.perf_counter()
    for i in range(0, n, step):
        encode_sparse(m[i : i + step], y[i : i + step])
    sparse_rate = m.nnz / (time.perf_counter() - start)
    return dense_rate, sparse_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--jar", nargs="?", const="auto", default=None,
                        help="put the Scala jar on the classpath (default path: scala/target/*.jar), so that "
                             "format('recordio-protobuf') and to_channel use the JVM writer")
    args = parser.parse_args()
    jar = _jar(args.jar) if args.jar else None

    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import spark_ml
    from spark_ml.arrow_vectors import csr_to_arrow

    dense_rate, sparse_rate = encoder_alone(args.rows)
    print(f"encoder alone, one core: dense {dense_rate / 1e6:.0f} M values/s, sparse {sparse_rate / 1e6:.1f} M nnz/s")

    builder = (SparkSession.builder.master(args.master).appName("convert-benchmark")
               .config("spark.driver.memory", "8g").config("spark.ui.enabled", "false"))
    if jar:
        builder = builder.config("spark.jars", jar)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    cores = spark.sparkContext.defaultParallelism
    writer = spark_ml.register(spark)

    dense = (spark.range(args.rows, numPartitions=cores)
             .select(array_to_vector(F.array(*[F.rand(i) for i in range(100)])).alias("features"),
                     (F.rand(101) > 0.5).cast("double").alias("label")).cache())
    dense.count()

    def sparse_rows(batches):
        import pyarrow as pa
        import scipy.sparse as sp

        for batch in batches:
            ids = batch.column(0).to_numpy()
            rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
            n = len(ids)
            cols = np.sort(rng.choice(100_000, (n, 50)), axis=1)
            m = sp.csr_matrix((rng.random(n * 50), cols.reshape(-1), np.arange(0, n * 50 + 1, 50)),
                              shape=(n, 100_000))
            m.sum_duplicates()
            yield pa.RecordBatch.from_arrays([csr_to_arrow(m), pa.array(rng.integers(0, 2, n).astype(float))],
                                             names=["features", "label"])

    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([StructField("features", VectorUDT()), StructField("label", DoubleType())])
    sparse = spark.range(args.rows, numPartitions=cores).mapInArrow(sparse_rows, schema)
    sparse = sparse.cache()
    sparse.count()

    root = tempfile.mkdtemp(prefix="spark-ml-bench-")
    rows = []
    try:
        for name, df, values in (("dense 100", dense, args.rows * 100), ("sparse 100k/50", sparse, args.rows * 50)):
            ours_path, pq_path = os.path.join(root, "ours"), os.path.join(root, "parquet")
            # warm-up (JIT, Python workers) on a slice, not timed
            spark_ml.to_channel(df.limit(20_000), ours_path)
            df.limit(20_000).write.mode("overwrite").parquet(pq_path)
            ours = best_of(args.repeat, lambda df=df, p=ours_path: spark_ml.to_channel(df, p))
            parquet = best_of(args.repeat, lambda df=df, p=pq_path: df.write.mode("overwrite").parquet(p))
            read = best_of(args.repeat, lambda p=ours_path: spark.read.format("recordio-protobuf").load(p)
                           .write.format("noop").mode("overwrite").save())
            size = sum(os.path.getsize(os.path.join(ours_path, f)) for f in os.listdir(ours_path))
            rows.append((name, ours, parquet, read, values, size))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        spark.stop()

    print(f"\n{args.rows:,} rows, {args.master} ({cores} cores), best of {args.repeat}, {writer} writer")
    print(f"{'data':<16}{'ours write':>12}{'parquet':>10}{'ratio':>8}{'read back':>11}"
          f"{'rows/s (ours)':>16}{'values/s/core':>15}{'MB written':>12}")
    for name, ours, parquet, read, values, size in rows:
        print(f"{name:<16}{ours:>11.2f}s{parquet:>9.2f}s{parquet / ours:>7.2f}x{read:>10.2f}s"
              f"{args.rows / ours:>16,.0f}{values / ours / cores / 1e6:>13.1f} M{size / 1e6:>12.0f}")


def _jar(path: str) -> str:
    from spark_ml.jvm import jar_path

    return jar_path() if path == "auto" else path


if __name__ == "__main__":
    main()

"""JVM recordio-protobuf writer vs Spark's own Parquet writer on the same cached DataFrame.

    .venv/bin/python benchmarks/convert_jvm.py [--rows 1000000] [--dim 100] [--repeats 3] [--dtype float32]

Builds the Scala jar if needed (scala/build.sh), starts local[2] with it, caches rows x dim dense vectors
(plus a double label), and times each writer a few times into a scratch folder; prints rows/s,
values/s/core and the ratio of the best times, then times reading both back. Speed lives here, not in
the tests.
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

ROOT = Path(__file__).resolve().parent.parent
CORES = 2


def build_jar() -> str:
    build = ["bash", str(ROOT / "scala" / "build.sh")]
    out = subprocess.run(build, check=True, capture_output=True, text=True,
                         env={**os.environ, "VENV_PYTHON": sys.executable})
    return out.stdout.strip().splitlines()[-1]


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def folder_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def sink(df) -> None:
    df.write.format("noop").mode("overwrite").save()


def report(what: str, times: dict[str, list[float]], total_values: int, rows: int,
           paths: dict[str, str]) -> None:
    print(f" {what}:")
    for name, runs in times.items():
        best = min(runs)
        size = f"{folder_bytes(paths[name]) / 2**20:8.1f} MiB" if name in paths else ""
        print(f"  {name:34s} best {best:6.2f}s  (runs {', '.join(f'{t:.2f}' for t in runs)})  "
              f"{rows / best:12,.0f} rows/s  {total_values / best / CORES:14,.0f} values/s/core  {size}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    jar = build_jar()
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (SparkSession.builder.master(f"local[{CORES}]").appName("convert_jvm")
             .config("spark.jars", jar).config("spark.driver.memory", "6g")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    values = F.array(*[F.rand(seed=i) for i in range(args.dim)])
    df = (spark.range(args.rows, numPartitions=CORES)
          .select(array_to_vector(values).alias("features"),
                  F.floor(F.rand(seed=7) * 2).cast("double").alias("label"))
          .cache())
    df.count()

    scratch = tempfile.mkdtemp(prefix="convert_jvm_")
    try:
        pq_path, rec_path = os.path.join(scratch, "parquet"), os.path.join(scratch, "recordio")
        writers = {
            "parquet (Spark)": lambda: df.write.mode("overwrite").parquet(pq_path),
            f"recordio-protobuf (JVM, {args.dtype})": lambda: df.write.format("recordio-protobuf")
            .option("labelCol", "label").option("dtype", args.dtype).mode("overwrite").save(rec_path),
            "noop (scan of the cache only)": lambda: df.write.format("noop").mode("overwrite").save(),
        }
        times = {name: [] for name in writers}
        for _ in range(args.repeats):  # interleaved, so warm-up and machine load hit every writer alike
            for name, write in writers.items():
                times[name] += timed(write, 1)
        parquet, recordio = times["parquet (Spark)"], times[f"recordio-protobuf (JVM, {args.dtype})"]
        total_values = args.rows * args.dim
        print(f"{args.rows:,} rows x {args.dim} dense values + label, local[{CORES}], cached; "
              f"best of {args.repeats}")
        report("write", times, total_values, args.rows,
               {"parquet (Spark)": pq_path, f"recordio-protobuf (JVM, {args.dtype})": rec_path})
        print(f"  speed-up of recordio-protobuf over parquet: {min(parquet) / min(recordio):.2f}x")

        readers = {
            "parquet (Spark)": lambda: sink(spark.read.parquet(pq_path)),
            "recordio-protobuf (JVM)": lambda: sink(spark.read.format("recordio-protobuf").load(rec_path)),
        }
        read_times = {name: [] for name in readers}
        for _ in range(args.repeats):
            for name, read in readers.items():
                read_times[name] += timed(read, 1)
        report("read (into a noop sink)", read_times, total_values, args.rows, {})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        spark.stop()


if __name__ == "__main__":
    main()

"""The main end-to-end job on local Spark: ``spark-ml demo`` / ``make demo``."""

from __future__ import annotations

import os
import sys
import tempfile
import time


def _dataset():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("the demo uses scikit-learn's bundled datasets: pip install scikit-learn") from None
    return load_digits()


def run(master: str = "local[2]", workdir: str | None = None) -> None:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    import spark_ml

    workdir = workdir or tempfile.mkdtemp(prefix="spark-ml-demo-")
    spark = (SparkSession.builder.master(master).appName("spark-ml demo")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        digits = _dataset()
        rows = [(Vectors.dense(x), float(y)) for x, y in zip(digits.data, digits.target, strict=True)]
        df = spark.createDataFrame(rows, ["features", "label"]).repartition(2)
        print(f"DataFrame: {df.count()} handwritten digits (scikit-learn's UCI copy), {len(digits.data[0])} features")

        started = time.perf_counter()
        channel = spark_ml.to_channel(df, os.path.join(workdir, "digits"), recordsPerShard=1000)
        print(f"channel written in {time.perf_counter() - started:.2f}s: {channel}")
        for shard in channel.shards():
            print(f"  {shard.path}: {shard.records} records, {shard.bytes:,} bytes")

        back = spark.read.format("recordio-protobuf").load(channel.path)
        summary = back.groupBy("label").count().orderBy("label").collect()
        print(f"read back {back.count()} records; per label: "
              + ", ".join(f"{int(r['label'])}:{r['count']}" for r in summary))
    finally:
        spark.stop()
    print(f"demo files are in {workdir}")

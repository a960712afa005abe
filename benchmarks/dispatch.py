"""Fixed cost of the training runner and bandwidth of its barrier collectives, next to a trivial Spark job.

    .venv/bin/python benchmarks/dispatch.py [--repeat 5] [--master local[2]]

Prints: a trivial 2-task Spark job (mapInArrow), the same as a barrier stage, a no-op 2-worker training job
from launch to artifact (job record, barrier stage, user-code process, artifact written, manifest last),
and allreduce of 1, 16 and 64 MiB float32 arrays between the 2 workers (time and MiB/s per worker).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file: benchmarks/algorithms.py, xgboost.py must not shadow packages
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def _noop(batches):
    yield from batches


def _allreduce_probe(sizes_mib, rounds):
    def probe(batches):
        import numpy as np
        import pyarrow as pa
        from pyspark import BarrierTaskContext

        from spark_ml.runner.barrier import BarrierCollectives

        for _ in batches:
            pass
        coll = BarrierCollectives(BarrierTaskContext.get())
        coll.allreduce(np.ones(16, np.float32))  # warm-up
        out = []
        for mib in sizes_mib:
            data = np.ones(mib * (1 << 20) // 4, np.float32)
            times = []
            for _ in range(rounds):
                coll.barrier()
                start = time.perf_counter()
                total = coll.allreduce(data)
                times.append(time.perf_counter() - start)
            assert float(total[0]) == coll.world_size
            out.append({"mib": mib, "seconds": statistics.median(times)})
        coll.finish()
        yield pa.RecordBatch.from_pylist([{"rank": coll.rank, "result": json.dumps(out)}])

    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    import spark_ml
    from spark_ml.estimators.script import archive_source
    from spark_ml.runner import SCRIPT, ScriptPlan, TrainingRequest, run_training

    workdir = tempfile.mkdtemp(prefix="spark-ml-dispatch-")
    os.environ.setdefault("SPARK_ML_HOME", os.path.join(workdir, "home"))
    spark = (SparkSession.builder.master(args.master).appName("dispatch-benchmark")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")

    def timed(fn) -> float:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    frame = spark.range(0, 2, 1, numPartitions=2)
    plain = timed(lambda: frame.mapInArrow(_noop, "id long").collect())
    barrier = timed(lambda: frame.mapInArrow(_noop, "id long", barrier=True).collect())

    source = os.path.join(workdir, "src")
    os.makedirs(source)
    with open(os.path.join(source, "noop.py"), "w") as f:
        f.write("import os\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'model.txt'), 'w').write('ok')\n")
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0]), 1.0)] * 4, ["features", "label"]).repartition(2)
    channel = spark_ml.to_channel(df, os.path.join(workdir, "channel"))
    plan = ScriptPlan(entry_point="noop.py", source_archive=archive_source(source))
    request = lambda: TrainingRequest("noop", {}, {"train": channel}, num_workers=2, kind=SCRIPT,  # noqa: E731
                                      script=plan, progress=False)
    run_training(spark, request())  # warm-up
    noop_job = timed(lambda: run_training(spark, request()))

    sizes = [1, 16, 64]
    rows = frame.mapInArrow(_allreduce_probe(sizes, 3), "rank long, result string", barrier=True).collect()
    worst = {}
    for row in rows:
        for item in json.loads(row.result):
            worst[item["mib"]] = max(worst.get(item["mib"], 0.0), item["seconds"])
    spark.stop()

    print(f"\n{args.master}, median of {args.repeat}")
    print(f"{'trivial Spark job (2 tasks)':<44}{plain * 1000:>10.0f} ms")
    print(f"{'trivial barrier stage (2 tasks)':<44}{barrier * 1000:>10.0f} ms")
    print(f"{'no-op 2-worker training job, launch→artifact':<44}{noop_job * 1000:>10.0f} ms"
          f"   ({noop_job / plain:.1f}× the trivial job)")
    for mib in sizes:
        seconds = worst[mib]
        print(f"{f'allreduce {mib} MiB float32, 2 workers':<44}{seconds * 1000:>10.0f} ms   {mib / seconds:8.1f} MiB/s")


if __name__ == "__main__":
    main()

"""Random Cut Forest and k-NN against their peers on the same data, in the same run (issue 14).

**RCF.** 1M x 20 rows (Gaussian clusters) with 1% anomalies (uniform in the clusters' bounding cube), 100 trees x
256 samples. Ours: ``run_builtin`` on a recordIO-protobuf channel of 8 shards with 2 thread-workers (reading,
decoding and sampling included; the channel is written before timing), then ``predict`` over all rows in
10,000-row batches on 2 threads (as two Spark tasks would score them). scikit-learn's
``IsolationForest(n_estimators=100, max_samples=256, n_jobs=2)``: ``fit`` + ``score_samples`` on the in-memory
array. rrcf (the RRCF reference, pure Python) on a 10k-row subset: 100 trees of 256 rows of the subset, each query
scored as RRCF scores a new point (insert it in every tree, take its codisp, forget it: what our score is the
expectation of) on ``--rrcf-points`` of the subset's rows, and in rrcf's batch mode (codisp of every sampled row
in the trees that hold it, its README's recipe) on the whole subset; both extrapolated per point to the full
data. AUC of the anomaly scores against the planted labels for all three. Targets: fit+score <= 1x
IsolationForest's time at AUC within 0.02; >= 50x rrcf per point.

**k-NN.** A 1M x 50 index (Gaussian clusters, as embeddings), 100k queries from the same distribution, k=10. Ours:
the KNNModel's ``predict`` (faiss, ``OMP_NUM_THREADS=2``) with a faiss.Flat and a faiss.IVFFlat index (nlists and
nprobe auto: 1000 and 8), built by ``run_builtin`` from the channel (fit time printed, not a target).
scikit-learn ``NearestNeighbors(algorithm="brute", n_jobs=2)``: ``kneighbors`` of the queries. Both exhaustive
searches answer ``--exact-queries`` of the queries (10,000 by default) and their times are scaled to all of them
(they cost the same per query); IVFFlat answers all of them. MLlib's ``BucketedRandomProjectionLSH`` (bucket length
and table count from ``--lsh-*``): ``approxSimilarityJoin`` of the queries with the index at the radius that holds
95% of the queries' exact 10th neighbours, top 10 per query by distance (the batch form of
``approxNearestNeighbors``), on ``--lsh-index-rows`` x ``--lsh-queries`` (extrapolated to the full sizes:
per query x index fraction). recall@10 of every method against the exact neighbours. Targets: Flat >= 2x
scikit-learn; IVFFlat >= 10x Flat at recall@10 >= 0.95.

The machine is shared: the 1-minute load average is printed with the numbers; times are wall seconds. OpenMP
threads wait passively (``OMP_WAIT_POLICY=PASSIVE``), or spinning threads of faiss and scikit-learn would fight
the machine's other jobs.

    .venv/bin/python benchmarks/anomaly_knn.py [--part rcf knn] [--rows 1000000] [--queries 100000]
        [--rrcf-points 300] [--exact-queries 10000] [--lsh-index-rows 100000] [--lsh-queries 1000]
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file: the project root on the path, not benchmarks/
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # a shared machine: idle OpenMP threads must not spin

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from algorithms.batch import Batch  # noqa: E402
from algorithms.builtin import load_model, run_builtin  # noqa: E402
from algorithms.channel import RECORDIO_PROTOBUF, Channel, Manifest, Shard  # noqa: E402
from algorithms.tensor_codec import encode_dense  # noqa: E402
from algorithms.training import ChannelInput, Reporter, ThreadGroup, TrainingEnv  # noqa: E402

CORES = 2


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def clusters(rows: int, features: int, centers: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.uniform(-10, 10, (centers, features)).astype(np.float32)
    x = rng.standard_normal((rows, features), dtype=np.float32) * spread
    x += means[rng.integers(0, centers, rows)]
    return x


def write_channel(path: str, x: np.ndarray, labels: np.ndarray | None = None, shards: int = 8) -> Channel:
    os.makedirs(path, exist_ok=True)
    entries = []
    for i, idx in enumerate(np.array_split(np.arange(len(x)), shards)):
        name = f"part-{i:05d}.pbr"
        size = 0
        with open(os.path.join(path, name), "wb") as f:
            for lo in range(idx[0], idx[-1] + 1, 100_000):
                hi = min(lo + 100_000, idx[-1] + 1)
                size += f.write(encode_dense(x[lo:hi], None if labels is None else labels[lo:hi]))
        entries.append(Shard(name, len(idx), size))
    manifest = Manifest(RECORDIO_PROTOBUF, tuple(entries), feature_dim=x.shape[1], has_label=labels is not None,
                        label_dim=1 if labels is not None else None, feature_dtype="float32")
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write(manifest.to_json())
    return Channel.open(path)


def fit(algorithm: str, channel: Channel, workers: int, hyperparameters: dict[str, str], model_dir: str):
    def work(rank: int, collectives) -> None:
        with threadpool_limits(1):
            shards = channel.shards()[rank::workers]
            env = TrainingEnv(dict(hyperparameters), {"train": ChannelInput.from_channel("train", channel, shards)},
                              model_dir, rank=rank, hosts=[f"algo-{i + 1}" for i in range(workers)],
                              collectives=collectives, reporter=Reporter())
            run_builtin(algorithm, env)

    start = time.perf_counter()
    ThreadGroup(workers, timeout=3600).run(work)
    return load_model(model_dir), time.perf_counter() - start


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


# ---------------------------------------------------------------------------------------------------- RCF


def rcf_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = clusters(rows, 20, 5, 1.0, seed)
    rng = np.random.default_rng(seed + 1)
    anomalies = rng.choice(rows, rows // 100, replace=False)
    low, high = x.min(axis=0), x.max(axis=0)
    x[anomalies] = rng.uniform(low, high, (len(anomalies), x.shape[1])).astype(np.float32)
    labels = np.zeros(rows)
    labels[anomalies] = 1
    return x, labels


def score_rows(model, x: np.ndarray, threads: int = CORES, batch: int = 10_000) -> np.ndarray:
    out = np.empty(len(x), np.float32)

    def part(start: int) -> None:
        out[start:start + batch] = model.predict(Batch(x[start:start + batch]))["score"]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(part, range(0, len(x), batch)))
    return out


def load_rrcf():
    """rrcf's RCTree from its module file (its package __init__ needs pkg_resources, gone from setuptools)."""
    spec = importlib.util.find_spec("rrcf")
    path = os.path.join(list(spec.submodule_search_locations)[0], "rrcf.py")
    module_spec = importlib.util.spec_from_file_location("rrcf_rrcf", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def bench_rcf(args, work: str) -> None:
    x, labels = rcf_data(args.rows)
    channel = write_channel(os.path.join(work, "rcf"), x)
    hp = {"num_trees": "100", "num_samples_per_tree": "256", "feature_dim": "20"}
    print(f"\nRCF: {len(x):,} x 20, {int(labels.sum()):,} anomalies, 100 trees x 256 samples ({load()})")
    model, fit_seconds = fit("randomcutforest", channel, CORES, hp, os.path.join(work, "rcf-model"))
    start = time.perf_counter()
    scores = score_rows(model, x)
    score_seconds = time.perf_counter() - start
    ours_auc = auc(labels, scores)
    ours = fit_seconds + score_seconds
    print(f"  ours (2 workers, 2 scoring threads): fit {fit_seconds:.1f} s + score {score_seconds:.1f} s = "
          f"{ours:.1f} s, AUC {ours_auc:.4f} ({load()})")

    from sklearn.ensemble import IsolationForest

    start = time.perf_counter()
    forest = IsolationForest(n_estimators=100, max_samples=256, n_jobs=2, random_state=0).fit(x)
    if_fit = time.perf_counter() - start
    start = time.perf_counter()
    if_scores = -forest.score_samples(x)
    if_score = time.perf_counter() - start
    if_auc = auc(labels, if_scores)
    print(f"  IsolationForest(n_jobs=2): fit {if_fit:.1f} s + score {if_score:.1f} s = {if_fit + if_score:.1f} s, "
          f"AUC {if_auc:.4f} ({load()})")
    print(f"  -> ours / IsolationForest time: {ours / (if_fit + if_score):.2f}x (target <= 1x); AUC difference "
          f"{ours_auc - if_auc:+.4f} (target within 0.02)")

    rrcf = load_rrcf()
    rng = np.random.default_rng(2)
    subset = rng.choice(len(x), 10_000, replace=False)
    sx, sy = x[subset].astype(np.float64), labels[subset]
    np.random.seed(3)
    start = time.perf_counter()
    trees = [rrcf.RCTree(sx[rng.choice(len(sx), 256, replace=False)]) for _ in range(100)]
    build = time.perf_counter() - start
    points = subset[: args.rrcf_points]
    start = time.perf_counter()
    for q in x[points].astype(np.float64):
        for tree in trees:
            tree.insert_point(q, index="q")
            tree.codisp("q")
            tree.forget_point("q")
    insert_per_point = (time.perf_counter() - start) / len(points) + build / len(sx)
    # rrcf's batch mode (its README): trees over disjoint samples of the subset, codisp of the rows they hold
    start = time.perf_counter()
    total, seen, forest_trees = np.zeros(len(sx)), np.zeros(len(sx)), 0
    while forest_trees < 100:
        for ix in rng.choice(len(sx), size=(len(sx) // 256, 256), replace=False):
            tree = rrcf.RCTree(sx[ix], index_labels=ix)
            for leaf in tree.leaves:
                total[leaf] += tree.codisp(leaf)
                seen[leaf] += 1
            forest_trees += 1
    batch_seconds = time.perf_counter() - start
    covered = seen > 0
    batch_auc = auc(sy[covered], total[covered] / seen[covered])
    ours_per_point = ours / len(x)
    print(f"  rrcf, insert/codisp/forget (100 trees from a 10k subset, {len(points)} points): "
          f"{insert_per_point * 1e3:.1f} ms per point -> {insert_per_point * len(x) / 3600:.1f} h for "
          f"{len(x):,} rows; ours {ours_per_point * 1e6:.1f} us per point: "
          f"{insert_per_point / ours_per_point:.0f}x faster (target >= 50x) ({load()})")
    per_row = batch_seconds / len(sx)
    print(f"  rrcf, batch mode on the 10k subset (100 trees, codisp of the rows each tree holds): "
          f"{batch_seconds:.1f} s = {per_row * 1e3:.2f} ms per row -> {per_row * len(x) / 60:.0f} min "
          f"for {len(x):,} rows ({per_row / ours_per_point:.0f}x ours per point), AUC "
          f"{batch_auc:.4f} on the {covered.sum():,} rows sampled")


# ---------------------------------------------------------------------------------------------------- k-NN


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact, strict=True)]))


def bench_knn(args, work: str) -> None:
    rows, queries_n, k = args.rows, args.queries, 10
    data = clusters(rows + queries_n, 50, 1000, 1.0, seed=5)
    x, queries = data[:rows], data[rows:]
    # each row's label is its row number, so the neighbours' labels name the rows (float32 holds them exactly)
    channel = write_channel(os.path.join(work, "knn"), x, np.arange(rows, dtype=np.float32))
    print(f"\nk-NN: index {rows:,} x 50, {queries_n:,} queries, k={k} ({load()})")
    base = {"k": str(k), "predictor_type": "classifier", "sample_size": str(rows), "feature_dim": "50"}
    flat, flat_fit = fit("knn", channel, 1, base, os.path.join(work, "flat"))
    exact_n = min(args.exact_queries or queries_n, queries_n)
    scale = queries_n / exact_n
    note = f" (measured on {exact_n:,} queries, scaled to {queries_n:,})" if exact_n < queries_n else ""
    start = time.perf_counter()
    flat.predict(Batch(queries[:exact_n]))
    flat_seconds = (time.perf_counter() - start) * scale
    exact = flat.labels[flat.neighbours(queries[:exact_n])[1]].astype(np.int64)
    print(f"  ours faiss.Flat: fit {flat_fit:.1f} s; transform {flat_seconds:.1f} s{note} ({load()})")

    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", n_jobs=2).fit(x)
    start = time.perf_counter()
    _, sk_ids = nn.kneighbors(queries[:exact_n])
    sk_seconds = (time.perf_counter() - start) * scale
    print(f"  scikit-learn NearestNeighbors(brute, n_jobs=2): {sk_seconds:.1f} s{note}, recall@10 vs Flat "
          f"{recall(sk_ids, exact):.4f} ({load()})")
    print(f"  -> Flat is {sk_seconds / flat_seconds:.1f}x scikit-learn (target >= 2x)")

    ivf, ivf_fit = fit("knn", channel, 1, {**base, "index_type": "faiss.IVFFlat"}, os.path.join(work, "ivf"))
    start = time.perf_counter()
    ivf.predict(Batch(queries))
    ivf_seconds = time.perf_counter() - start
    found = ivf.labels[ivf.neighbours(queries[:exact_n])[1]].astype(np.int64)
    ivf_recall = recall(found, exact)
    print(f"  ours faiss.IVFFlat (nlists {ivf.index.nlist}, nprobe {ivf.index.nprobe}): fit {ivf_fit:.1f} s; "
          f"transform {ivf_seconds:.1f} s on all {queries_n:,} queries, recall@10 {ivf_recall:.4f} ({load()})")
    print(f"  -> IVFFlat is {flat_seconds / ivf_seconds:.1f}x Flat (target >= 10x at recall@10 >= 0.95)")
    bench_lsh(args, x, queries, k)


def bench_lsh(args, x: np.ndarray, queries: np.ndarray, k: int) -> None:
    """MLlib's BucketedRandomProjectionLSH on a subset of the index and of the queries (extrapolated)."""
    from pyspark.ml.feature import BucketedRandomProjectionLSH
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession, Window
    from pyspark.sql import functions as F

    n_index, n_queries = min(args.lsh_index_rows, len(x)), min(args.lsh_queries, len(queries))
    sub_x, sub_q = x[:n_index], queries[:n_queries]
    import faiss

    exact_index = faiss.IndexFlatL2(sub_x.shape[1])
    exact_index.add(sub_x)
    d2, exact_ids = exact_index.search(sub_q, k)
    radius = float(np.sqrt(np.quantile(d2[:, -1], 0.95)))
    spark = (SparkSession.builder.master(f"local[{CORES}]").config("spark.driver.memory", "6g")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "8").getOrCreate())
    index_df = spark.createDataFrame([(i, Vectors.dense(r.tolist())) for i, r in enumerate(sub_x)], ["id", "features"])
    query_df = spark.createDataFrame([(i, Vectors.dense(r.tolist())) for i, r in enumerate(sub_q)], ["qid", "features"])
    index_df, query_df = index_df.repartition(CORES).cache(), query_df.repartition(CORES).cache()
    index_df.count(), query_df.count()
    lsh = BucketedRandomProjectionLSH(inputCol="features", outputCol="hashes", bucketLength=args.lsh_bucket,
                                      numHashTables=args.lsh_tables, seed=7)
    start = time.perf_counter()
    model = lsh.fit(index_df)
    joined = model.approxSimilarityJoin(query_df, index_df, radius, distCol="distance")
    ranked = joined.select(F.col("datasetA.qid").alias("qid"), F.col("datasetB.id").alias("id"), "distance") \
        .withColumn("rank", F.row_number().over(Window.partitionBy("qid").orderBy("distance"))) \
        .where(F.col("rank") <= k).collect()
    seconds = time.perf_counter() - start
    found: dict[int, set] = {}
    for row in ranked:
        found.setdefault(row.qid, set()).add(row.id)
    lsh_recall = float(np.mean([len(found.get(q, set()) & set(exact_ids[q])) / k for q in range(n_queries)]))
    scale = (len(queries) / n_queries) * (len(x) / n_index)
    print(f"  MLlib BucketedRandomProjectionLSH (bucket {args.lsh_bucket}, {args.lsh_tables} tables) approxSimilarity"
          f"Join at radius {radius:.2f}, top {k}: {seconds:.1f} s on {n_index:,} x {n_queries:,}, recall@10 "
          f"{lsh_recall:.4f}; x{scale:.0f} -> {seconds * scale / 60:.0f} min for the full sizes ({load()})")
    spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", nargs="+", choices=("rcf", "knn"), default=["rcf", "knn"])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--rrcf-points", type=int, default=300)
    parser.add_argument("--exact-queries", type=int, default=10_000,
                        help="queries Flat and scikit-learn answer (their time is scaled to all); 0: all")
    parser.add_argument("--lsh-index-rows", type=int, default=100_000)
    parser.add_argument("--lsh-queries", type=int, default=1000)
    parser.add_argument("--lsh-bucket", type=float, default=4.0)
    parser.add_argument("--lsh-tables", type=int, default=4)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="spark-ml-bench-")
    try:
        if "rcf" in args.part:
            bench_rcf(args, work)
        if "knn" in args.part:
            bench_knn(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

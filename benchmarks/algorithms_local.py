"""K-Means and PCA fit time without Spark: 1M x 50 dense rows in 20 Gaussian blobs, 1 and 2 thread-workers.

Writes the rows as a recordIO-protobuf train channel (8 shards), then times ``run_builtin`` (reading and
decoding the shards included) with 1 worker and with 2 workers as threads of this process, next to
scikit-learn on the same in-memory array: ``KMeans(k=20, n_init=1, max_iter=20)`` (the MLlib benchmark's
settings) and ``PCA(10)``. It prints the k-means cost (inertia, computed exactly on all rows) and the
PCA explained variances against a float64 reference. BLAS and OpenMP are pinned to one thread per
worker, as on a Spark executor core (``--threads`` changes that). Thread-workers share one process (and
its GIL, which decoding holds part of the time), so the CPU seconds, summed over the workers, are the
number to compare with a Spark executor's budget; wall time also shows what else the machine runs.

    .venv/bin/python benchmarks/algorithms_local.py [--rows 1000000] [--features 50] [--k 20]
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file: benchmarks/algorithms.py, xgboost.py must not shadow packages
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from algorithms.builtin import (
    load_model,  # noqa: E402
    run_builtin,  # noqa: E402
)
from algorithms.builtin.kmeans.algorithm import closest_centers  # noqa: E402
from algorithms.channel import RECORDIO_PROTOBUF, Channel, Manifest, Shard  # noqa: E402
from algorithms.tensor_codec import encode_dense  # noqa: E402
from algorithms.training import ChannelInput, Reporter, ThreadGroup, TrainingEnv  # noqa: E402


def make_blobs(rows: int, features: int, centers: int, seed: int = 0) -> np.ndarray:
    """Isotropic Gaussian blobs (unit spread) around centers drawn uniformly in [-10, 10]^features."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-10.0, 10.0, size=(centers, features))
    labels = rng.integers(0, centers, size=rows)
    x = rng.standard_normal((rows, features), dtype=np.float32)
    x += means[labels].astype(np.float32)
    return x


def write_channel(path: str, x: np.ndarray, shards: int, rows_per_encode: int = 100_000) -> Channel:
    os.makedirs(path, exist_ok=True)
    entries = []
    for i, idx in enumerate(np.array_split(np.arange(len(x)), shards)):
        name = f"part-{i:05d}.pbr"
        size = 0
        with open(os.path.join(path, name), "wb") as f:
            for lo in range(idx[0], idx[-1] + 1, rows_per_encode):
                size += f.write(encode_dense(x[lo : min(lo + rows_per_encode, idx[-1] + 1)]))
        entries.append(Shard(name, len(idx), size))
    manifest = Manifest(RECORDIO_PROTOBUF, tuple(entries), feature_dim=x.shape[1], sparse=False,
                        feature_dtype="float32")
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write(manifest.to_json())
    return Channel.open(path)


def fit(algorithm: str, channel: Channel, workers: int, hyperparameters: dict[str, str], model_dir: str,
        threads: int):
    """Run ``workers`` thread-workers over the channel's shards; the model, wall time and CPU time."""
    def work(rank: int, collectives) -> None:
        with threadpool_limits(threads):
            shards = channel.shards()[rank::workers]
            channels = {"train": ChannelInput.from_channel("train", channel, shards)}
            hosts = [f"algo-{i + 1}" for i in range(workers)]
            env = TrainingEnv(dict(hyperparameters), channels, model_dir, rank=rank, hosts=hosts,
                              collectives=collectives, reporter=Reporter())
            run_builtin(algorithm, env)

    start, cpu = time.perf_counter(), time.process_time()
    ThreadGroup(workers).run(work)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return load_model(model_dir), elapsed, cpu


def read_time(channel: Channel, batch_size: int) -> float:
    """Seconds to stream and decode the whole channel once (one worker)."""
    start = time.perf_counter()
    for _ in ChannelInput.from_channel("train", channel).batches(batch_size):
        pass
    return time.perf_counter() - start


def inertia(x: np.ndarray, centers: np.ndarray, block: int = 200_000) -> float:
    return float(sum(closest_centers(x[lo : lo + block], centers)[1].sum() for lo in range(0, len(x), block)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--k", type=int, default=20, help="k-means clusters (and blobs in the data)")
    parser.add_argument("--components", type=int, default=10, help="PCA components")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per worker")
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()

    x = make_blobs(args.rows, args.features, args.k)
    root = tempfile.mkdtemp(prefix="kmeans-pca-bench-")
    try:
        start = time.perf_counter()
        channel = write_channel(os.path.join(root, "train"), x, shards=8)
        print(f"data: {args.rows} x {args.features} float32 in {args.k} blobs; channel written in "
              f"{time.perf_counter() - start:.2f} s")
        with threadpool_limits(args.threads):
            print(f"decode only: {read_time(channel, 5000):.2f} s at 5000 rows/batch, "
                  f"{read_time(channel, 40_000):.2f} s at 40000 rows/batch (1 worker)")

        reference: dict[str, object] = {}
        if not args.skip_sklearn:
            from sklearn.cluster import KMeans
            from sklearn.decomposition import PCA

            with threadpool_limits(args.threads):
                start = time.perf_counter()
                km = KMeans(args.k, n_init=1, max_iter=20, random_state=0).fit(x)
                elapsed = time.perf_counter() - start
                reference["kmeans"] = km.inertia_
                print(f"sklearn KMeans(k={args.k}, n_init=1, max_iter=20)  fit {elapsed:6.2f} s  "
                      f"inertia {km.inertia_:.6e}")
                start = time.perf_counter()
                pca = PCA(args.components).fit(x)
                elapsed = time.perf_counter() - start
                # the reference variances come from float64 data (scikit-learn keeps float32 input in float32)
                reference["pca"] = PCA(args.components).fit(x.astype(np.float64)).explained_variance_
                err = float(np.max(np.abs(pca.explained_variance_ - reference["pca"]) / reference["pca"]))
                print(f"sklearn PCA({args.components})                         fit {elapsed:6.2f} s  "
                      f"explained variance max rel. diff vs float64 {err:.1e}")

        for workers in (1, 2):
            model, elapsed, cpu = fit("kmeans", channel, workers, {"k": str(args.k)},
                                      os.path.join(root, f"kmeans-{workers}"), args.threads)
            cost = inertia(x, model.cluster_centers)
            versus = f"  vs sklearn {cost / reference['kmeans']:.5f}" if "kmeans" in reference else ""
            print(f"{'kmeans':<18} workers={workers}  fit {elapsed:6.2f} s  (cpu {cpu:5.2f} s)  "
                  f"inertia {cost:.6e}{versus}")
        for mode in ("regular", "randomized"):
            for workers in (1, 2):
                hyperparameters = {"num_components": str(args.components), "algorithm_mode": mode}
                model, elapsed, cpu = fit("pca", channel, workers, hyperparameters,
                                          os.path.join(root, f"pca-{mode}-{workers}"), args.threads)
                versus = ""
                if "pca" in reference:
                    ref = np.asarray(reference["pca"])
                    err = float(np.max(np.abs(model.explained_variance - ref) / ref))
                    versus = f"  explained variance max rel. diff vs float64 {err:.1e}"
                name = f"pca {mode}"
                print(f"{name:<18} workers={workers}  fit {elapsed:6.2f} s  (cpu {cpu:5.2f} s){versus}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

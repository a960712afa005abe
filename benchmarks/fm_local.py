"""Factorization Machines without Spark: fit time and held-out log loss on 1M x 50, dense and sparse.

Runs the real training contract (channel files, ``run_builtin``) with 1 and 2 thread-workers, BLAS
pinned to one thread per worker, so the numbers are what each Spark executor core would do. The
target (checked later against Spark): with Spark local[2], FM is >= 10x faster than MLlib's
FMClassifier (20 iterations: 266 s) at equal or better log loss, conversion to a channel included.

    .venv/bin/python benchmarks/fm_local.py [--rows 1000000] [--dim 50] [--epochs 3] [--workers 1 2]
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file: benchmarks/algorithms.py, xgboost.py must not shadow packages
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads BLAS: one BLAS thread per worker thread

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from algorithms.batch import Batch  # noqa: E402
from algorithms.builtin import (
    load_model,  # noqa: E402
    run_builtin,  # noqa: E402
)
from algorithms.channel import RECORDIO_PROTOBUF, Channel, Manifest, Shard  # noqa: E402
from algorithms.tensor_codec import encode_dense, encode_sparse  # noqa: E402
from algorithms.training import ChannelInput, Reporter, ThreadGroup, TrainingEnv  # noqa: E402


def make_features(rows: int, dim: int, sparse: bool, seed: int) -> np.ndarray | sp.csr_matrix:
    """Gaussian features; the sparse variant keeps ~20% of the entries, as CSR."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    if sparse:
        x[rng.random(x.shape) >= 0.2] = 0
        return sp.csr_matrix(x)
    return x


def make_labels(x: np.ndarray | sp.csr_matrix, density: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels drawn from a fixed random FM (linear and pairwise log-odds of std ~1), and P(label=1)."""
    weights = np.random.default_rng(7)
    dim = x.shape[1]
    w = weights.normal(0, 1 / np.sqrt(dim * density), dim)
    u = weights.normal(0, 1 / np.sqrt(dim * np.sqrt(2) * density), (dim, 4))
    x2 = x.multiply(x) if sp.issparse(x) else x * x
    xu = np.asarray(x @ u)
    logit = np.asarray(x @ w) + 0.5 * ((xu * xu).sum(1) - np.asarray(x2 @ (u * u).sum(1)))
    probability = 1 / (1 + np.exp(-logit))
    return (np.random.default_rng(seed).random(x.shape[0]) < probability).astype(np.float32), probability


def write_channel(path: str, x, y: np.ndarray, shards: int) -> tuple[Channel, float]:
    """Encode to recordIO-protobuf part files plus manifest; returns the channel and the seconds it took."""
    start = time.perf_counter()
    os.makedirs(path)
    out = []
    for i, part in enumerate(np.array_split(np.arange(x.shape[0]), shards)):
        rows = slice(int(part[0]), int(part[-1]) + 1)
        data = encode_sparse(x[rows], y[rows]) if sp.issparse(x) else encode_dense(x[rows], y[rows])
        name = f"part-{i:05d}.pbr"
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
        out.append(Shard(name, len(part), len(data)))
    manifest = Manifest(RECORDIO_PROTOBUF, tuple(out), feature_dim=x.shape[1], has_label=True,
                        sparse=sp.issparse(x), feature_dtype="float32")
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write(manifest.to_json())
    return Channel.open(path), time.perf_counter() - start


def fit(channel: Channel, hyperparameters: dict[str, str], workers: int, model_dir: str) -> float:
    def work(rank: int, collectives) -> None:
        shards = channel.shards()[rank::workers]
        env = TrainingEnv(hyperparameters=hyperparameters,
                          channels={"train": ChannelInput.from_channel("train", channel, shards)},
                          model_dir=model_dir, rank=rank, hosts=[f"algo-{i + 1}" for i in range(workers)],
                          collectives=collectives, reporter=Reporter())
        run_builtin("factorization-machines", env)

    start = time.perf_counter()
    ThreadGroup(workers).run(work)
    return time.perf_counter() - start


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-factors", type=int, default=8)  # MLlib FMClassifier's default factorSize
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()

    hyperparameters = {"feature_dim": str(args.dim), "num_factors": str(args.num_factors),
                       "predictor_type": "binary_classifier", "epochs": str(args.epochs),
                       "mini_batch_size": "1000", "linear_lr": "0.01", "factors_lr": "0.01",
                       "factors_init_sigma": "0.01"}
    print(f"FM binary classifier, {args.rows:,} x {args.dim}, num_factors={args.num_factors}, "
          f"epochs={args.epochs}, mini_batch_size=1000; held-out log loss on 100,000 rows")
    print(f"{'data':<8}{'workers':>8}{'encode s':>10}{'fit s':>9}{'rows/s':>12}{'log loss':>10}"
          f"{'base':>8}{'oracle':>8}")
    root = tempfile.mkdtemp(prefix="fm-bench-")
    try:
        for kind in ("dense", "sparse"):
            x = make_features(args.rows, args.dim, kind == "sparse", seed=1)
            density = 0.2 if kind == "sparse" else 1.0
            y, _ = make_labels(x, density, seed=2)
            x_test = make_features(100_000, args.dim, kind == "sparse", seed=3)
            y_test, truth = make_labels(x_test, density, seed=4)
            base, oracle = log_loss(y_test, np.full(len(y_test), y.mean())), log_loss(y_test, truth)
            channel, encode_seconds = write_channel(os.path.join(root, kind), x, y, args.shards)
            del x
            for workers in args.workers:
                model_dir = os.path.join(root, f"model-{kind}-{workers}")
                seconds = fit(channel, hyperparameters, workers, model_dir)
                loss = log_loss(y_test, load_model(model_dir).predict(Batch(x_test))["score"])
                print(f"{kind:<8}{workers:>8}{encode_seconds:>10.1f}{seconds:>9.1f}"
                      f"{args.rows * args.epochs / seconds:>12,.0f}{loss:>10.4f}{base:>8.4f}{oracle:>8.4f}")
        print("base: log loss of predicting the training label rate for every row; "
              "oracle: log loss of the true probabilities")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

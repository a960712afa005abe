"""Linear Learner fit time without Spark: 1M x 50 dense rows with a linear label, 1 and 2 thread-workers.

Prints, for each run, the wall time to write the train channel (recordIO-protobuf shards), the
fit time and the test accuracy, next to scikit-learn's LogisticRegression and SGDClassifier on the
same in-memory arrays. BLAS is pinned to one thread per worker, as on a Spark executor core.

    .venv/bin/python benchmarks/linear_learner_local.py [--rows 1000000] [--features 50] [--epochs 15]
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

from algorithms.batch import Batch  # noqa: E402
from algorithms.builtin import (
    load_model,  # noqa: E402
    run_builtin,  # noqa: E402
)
from algorithms.channel import RECORDIO_PROTOBUF, Channel, Manifest, Shard  # noqa: E402
from algorithms.tensor_codec import encode_dense  # noqa: E402
from algorithms.training import ChannelInput, Reporter, ThreadGroup, TrainingEnv  # noqa: E402


def make_data(rows: int, features: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features; the label is a noisy linear threshold (about 1.3% of labels disagree with it)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features), dtype=np.float32)
    w = rng.standard_normal(features)
    w /= np.linalg.norm(w)
    logit = x @ w.astype(np.float32) + 0.3
    y = (logit + rng.normal(0.0, 0.04, rows) > 0).astype(np.float32)
    return x, y


def write_channel(
    path: str, x: np.ndarray, y: np.ndarray, shards: int, rows_per_encode: int = 100_000
) -> Channel:
    os.makedirs(path, exist_ok=True)
    entries = []
    for i, idx in enumerate(np.array_split(np.arange(len(x)), shards)):
        name = f"part-{i:05d}.pbr"
        size = 0
        with open(os.path.join(path, name), "wb") as f:
            for lo in range(idx[0], idx[-1] + 1, rows_per_encode):
                hi = min(lo + rows_per_encode, idx[-1] + 1)
                size += f.write(encode_dense(x[lo:hi], y[lo:hi]))
        entries.append(Shard(name, len(idx), size))
    manifest = Manifest(
        RECORDIO_PROTOBUF,
        tuple(entries),
        feature_dim=x.shape[1],
        has_label=True,
        sparse=False,
        feature_dtype="float32",
    )
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write(manifest.to_json())
    return Channel.open(path)


def fit_linear_learner(channel: Channel, workers: int, hyperparameters: dict[str, str], model_dir: str):
    reporters = [Reporter() for _ in range(workers)]

    def work(rank: int, collectives) -> None:
        with threadpool_limits(1):
            shards = channel.shards()[rank::workers]
            env = TrainingEnv(dict(hyperparameters), {"train": ChannelInput.from_channel("train", channel, shards)},
                              model_dir, rank=rank, hosts=[f"algo-{i + 1}" for i in range(workers)],
                              collectives=collectives, reporter=reporters[rank])
            run_builtin("linear-learner", env)

    start = time.perf_counter()
    ThreadGroup(workers).run(work)
    elapsed = time.perf_counter() - start
    return load_model(model_dir), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()

    x, y = make_data(args.rows + 100_000, args.features)
    x_train, y_train, x_test, y_test = x[: args.rows], y[: args.rows], x[args.rows :], y[args.rows :]
    root = tempfile.mkdtemp(prefix="ll-bench-")
    try:
        start = time.perf_counter()
        channel = write_channel(os.path.join(root, "train"), x_train, y_train, shards=4)
        convert = time.perf_counter() - start
        print(
            f"data: {args.rows} x {args.features} dense, positives {y_train.mean():.3f}; "
            f"channel written in {convert:.2f} s"
        )
        hyperparameters = {"predictor_type": "binary_classifier", "epochs": str(args.epochs)}
        for workers in (1, 2):
            model, elapsed = fit_linear_learner(
                channel, workers, hyperparameters, os.path.join(root, f"model-{workers}")
            )
            accuracy = float((model.predict(Batch(x_test))["predicted_label"] == y_test).mean())
            print(
                f"linear-learner  workers={workers}  fit {elapsed:6.2f} s  test accuracy {accuracy:.4f}  "
                f"selected {model.selected}"
            )
        if not args.skip_sklearn:
            from sklearn.linear_model import LogisticRegression, SGDClassifier

            with threadpool_limits(1):
                for name, estimator in (
                    ("LogisticRegression", LogisticRegression(max_iter=1000)),
                    ("SGDClassifier", SGDClassifier(loss="log_loss", random_state=0)),
                ):
                    start = time.perf_counter()
                    estimator.fit(x_train, y_train)
                    elapsed = time.perf_counter() - start
                    accuracy = float((estimator.predict(x_test) == y_test).mean())
                    print(f"sklearn {name:<18} fit {elapsed:6.2f} s  test accuracy {accuracy:.4f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

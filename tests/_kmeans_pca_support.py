"""Test support for the k-means and PCA tests: real channel folders and workers run as threads."""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from algorithms.builtin import WorkerResult, load_model, run_builtin
from algorithms.channel import FULLY_REPLICATED, RECORDIO_PROTOBUF, Channel, Manifest, Shard
from algorithms.tensor_codec import encode_dense, encode_sparse
from algorithms.training import ChannelInput, Reporter, ThreadGroup, TrainingEnv


def write_channel(path: str, x: np.ndarray, parts: int = 2, sparse: bool = False,
                  dtype=np.float32, record_feature_dim: bool = True) -> Channel:
    """``x`` as ``parts`` recordIO-protobuf shards plus ``manifest.json`` (dense or sparse records)."""
    os.makedirs(path)
    x = sp.csr_matrix(x, dtype=dtype) if sp.issparse(x) else np.asarray(x, dtype=dtype)
    shards = []
    for i, rows in enumerate(np.array_split(np.arange(x.shape[0]), parts)):
        name = f"part-{i:05d}.pbr"
        data = encode_sparse(sp.csr_matrix(x[rows])) if sparse else encode_dense(x[rows])
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
        shards.append(Shard(name, len(rows), len(data)))
    manifest = Manifest(RECORDIO_PROTOBUF, tuple(shards), sparse=sparse, feature_dtype=np.dtype(dtype).name,
                        feature_dim=x.shape[1] if record_feature_dim else None)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write(manifest.to_json())
    return Channel.open(path)


def train(algorithm: str, hyperparameters: dict[str, str], train_channel: Channel, model_dir: str,
          workers: int = 1, test_channel: Channel | None = None) -> tuple[list[WorkerResult], object]:
    """Train with ``workers`` thread-workers (shards dealt round-robin); every rank's result and the model."""
    shards = train_channel.shards()

    def work(rank: int, collectives) -> WorkerResult:
        channels = {"train": ChannelInput.from_channel("train", train_channel, shards[rank::workers])}
        if test_channel is not None:
            replicated = test_channel.with_distribution(FULLY_REPLICATED)
            channels["test"] = ChannelInput.from_channel("test", replicated)
        env = TrainingEnv(dict(hyperparameters), channels, model_dir, rank=rank,
                          hosts=[f"algo-{i + 1}" for i in range(workers)],
                          collectives=collectives, reporter=Reporter())
        return run_builtin(algorithm, env)

    results = ThreadGroup(workers, timeout=120).run(work)
    return results, load_model(model_dir)

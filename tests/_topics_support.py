"""Test support for the topic models: corpora drawn from known topics, and worker runs as threads."""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from algorithms.builtin import WorkerResult, load_model, run_builtin
from algorithms.channel import FULLY_REPLICATED, Channel
from algorithms.training import ChannelInput, Reporter, ThreadGroup, TrainingEnv


def lda_corpus(docs: int, vocabulary: int, topics: int, alpha: float, length: int, seed: int = 1,
               concentration: float = 0.05) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Word counts drawn from LDA's generative process: (counts, topics k × V, mixtures docs × k)."""
    rng = np.random.default_rng(seed)
    beta = rng.dirichlet(np.full(vocabulary, concentration), size=topics)
    theta = rng.dirichlet(np.full(topics, alpha), size=docs)
    lengths = rng.poisson(length, size=docs)
    counts = rng.multinomial(lengths, theta @ beta)
    return sp.csr_matrix(counts.astype(np.float32)), beta, theta


def matched_l1(truth: np.ndarray, found: np.ndarray) -> np.ndarray:
    """L1 distance of each true topic to the found topic the Hungarian matching pairs it with."""
    cost = np.abs(truth[:, None, :] - found[None, :, :]).sum(axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return cost[rows, cols]


class Recorder(Reporter):
    def __init__(self):
        super().__init__()
        self.logs: list[str] = []
        self.metrics: list[tuple[str, float, int | None]] = []

    def log(self, message):
        self.logs.append(message)

    def metric(self, name, value, epoch=None, step=None):
        super().metric(name, value, epoch, step)
        self.metrics.append((name, value, epoch))


def vocabulary_channel(folder: str, words: list[str]) -> Channel:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{w}\n" for w in words))
    return Channel(folder, "text/plain", FULLY_REPLICATED)


def run(algorithm: str, hyperparameters: dict[str, str], train: Channel, model_dir: str, workers: int = 1,
        **others: Channel) -> tuple[list[WorkerResult], list[Recorder], object]:
    """Train with ``workers`` thread-workers (train shards dealt round-robin, other channels replicated)."""
    shards = train.shards()
    reporters = [Recorder() for _ in range(workers)]

    def work(rank: int, collectives) -> WorkerResult:
        channels = {"train": ChannelInput.from_channel("train", train, shards[rank::workers])}
        for name, channel in others.items():
            channels[name] = ChannelInput.from_channel(name, channel.with_distribution(FULLY_REPLICATED))
        env = TrainingEnv(dict(hyperparameters), channels, model_dir, rank=rank,
                          hosts=[f"algo-{i + 1}" for i in range(workers)], collectives=collectives,
                          reporter=reporters[rank])
        return run_builtin(algorithm, env)

    results = ThreadGroup(workers, timeout=300).run(work)
    return results, reporters, load_model(model_dir)

"""Feature and label scaling from a sample of ``num_point_for_scaler`` records, shared by all workers.

Each worker reads its share of the sample from the start of its train shards and sums what the
scaler needs (per-feature sums and sums of squares, label sums, class counts); the sums are added
up across workers through the collectives, so every worker derives the same scaler. Sparse features
are never densified: centering is applied implicitly by the SGD (``x @ w - mean @ w``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ...training.collectives import Collectives
from ...training.env import ChannelInput
from .params import LinearConfig

_READ_BYTES = 16 << 20  # dense feature bytes decoded at once


@dataclass(frozen=True)
class Scaler:
    """``x' = (x - feature_mean) / feature_scale``; ``y' = (y - label_mean) / label_scale`` (regression)."""

    feature_mean: np.ndarray  # zeros when features are not unbiased
    feature_scale: np.ndarray  # ones when features are not normalized
    label_mean: float
    label_scale: float
    sample_rows: int
    positives: float  # binary: positive labels in the sample
    class_counts: np.ndarray | None  # multiclass: rows per class in the sample

    @property
    def balanced_positive_weight(self) -> float:
        """Negatives / positives: the weight that makes both classes count equally in the loss."""
        negatives = self.sample_rows - self.positives
        if self.positives <= 0 or negatives <= 0:
            return 1.0
        return float(negatives / self.positives)

    def class_weights(self) -> np.ndarray:
        """Per-class weights ``n / (classes * n_class)`` (classes absent from the sample get weight 1)."""
        counts = self.class_counts
        weights = np.ones(len(counts))
        present = counts > 0
        weights[present] = self.sample_rows / (len(counts) * counts[present])
        return weights


def sample_sums(channel: ChannelInput, config: LinearConfig, world_size: int) -> dict[str, np.ndarray]:
    """This worker's sums over its share of the scaler sample (the first records of its shards)."""
    d = config.feature_dim
    want = math.ceil(config.num_point_for_scaler / max(1, world_size))
    sums = {
        "sum": np.zeros(d),
        "sumsq": np.zeros(d),
        "rows": np.zeros(1),
        "label_sum": np.zeros(1),
        "label_sumsq": np.zeros(1),
        "positives": np.zeros(1),
    }
    if config.predictor_type == "multiclass_classifier":
        sums["class_counts"] = np.zeros(config.num_classes)
    rows = 0
    read_rows = max(1, min(want, _READ_BYTES // (4 * max(1, d))))  # bounded, and few decoder calls
    batches = channel.batches(read_rows)
    try:
        for batch in batches:
            if rows >= want:
                break
            if len(batch) > want - rows:
                batch = batch.slice(0, want - rows)
            x = batch.features
            if sp.issparse(x):
                sums["sum"] += np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
                sums["sumsq"] += np.asarray(x.multiply(x).sum(axis=0), dtype=np.float64).ravel()
            else:
                x64 = np.asarray(x, dtype=np.float64)
                sums["sum"] += x64.sum(axis=0)
                sums["sumsq"] += np.einsum("ij,ij->j", x64, x64)
            if batch.labels is not None:
                y = np.asarray(batch.labels, dtype=np.float64).reshape(len(batch), -1)[:, 0]
                sums["label_sum"] += y.sum()
                sums["label_sumsq"] += y @ y
                if config.predictor_type == "binary_classifier":
                    sums["positives"] += float((y == 1).sum())
                elif config.predictor_type == "multiclass_classifier":
                    classes = y[(y >= 0) & (y < config.num_classes)].astype(np.int64)
                    sums["class_counts"] += np.bincount(classes, minlength=config.num_classes)
            rows += len(batch)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    sums["rows"][0] = rows
    return sums


def compute_scaler(channel: ChannelInput, config: LinearConfig, collectives: Collectives) -> Scaler:
    """The scaler every worker shares: sample sums added up across workers."""
    mine = sample_sums(channel, config, collectives.world_size)
    states = collectives.allgather_state(mine)
    total = {key: np.sum([s[key] for s in states], axis=0) for key in mine}
    n = float(total["rows"][0])
    if n == 0:
        raise ValueError("the train channel is empty: no records to train linear-learner on")
    d = config.feature_dim
    mean = total["sum"] / n
    var = np.maximum(total["sumsq"] / n - mean * mean, 0.0)
    std = np.sqrt(var)
    # Constant features (std ~ 0 relative to their size) keep scale 1, so they do not blow up.
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    feature_mean = mean if config.unbias_data else np.zeros(d)
    feature_scale = std if config.normalize_data else np.ones(d)
    label_mean, label_scale = 0.0, 1.0
    if config.predictor_type == "regressor":
        lmean = float(total["label_sum"][0] / n)
        lvar = max(float(total["label_sumsq"][0] / n) - lmean * lmean, 0.0)
        lstd = math.sqrt(lvar)
        if config.unbias_label:
            label_mean = lmean
        if config.normalize_label and lstd > 1e-12 * max(1.0, abs(lmean)):
            label_scale = lstd
    return Scaler(
        feature_mean=feature_mean,
        feature_scale=feature_scale,
        label_mean=label_mean,
        label_scale=label_scale,
        sample_rows=int(n),
        positives=float(total["positives"][0]),
        class_counts=total.get("class_counts"),
    )

"""Streaming metrics for Linear Learner: threshold calibration, model selection and final scores.

Everything here accumulates sums that workers add up through the collectives, so memory does not
depend on the number of rows:

- :class:`MarginHistogram` counts, per model, positive and negative rows per margin bin (8192 bins,
  uniform in ``asinh(margin)``: fine near the decision boundary, wide enough for any margin). Every
  bin edge is a candidate threshold, so calibration and selection by accuracy, F-beta,
  precision at a target recall or recall at a target precision work on any number of rows.
- :class:`BinaryEvaluator`, :class:`MulticlassEvaluator` and :class:`RegressionEvaluator` score the
  final model on the validation and test channels with SageMaker's metric names.
"""

from __future__ import annotations

import math

import numpy as np

from .kernels import NumpyLinearOps
from .losses import Loss

BINS = 8192
_LIMIT = float(np.arcsinh(1e4))
NATURAL_EDGE = BINS // 2  # the edge at margin 0
_NP = NumpyLinearOps(np.float64)


def bin_index(margins: np.ndarray) -> np.ndarray:
    u = np.arcsinh(np.nan_to_num(np.asarray(margins, dtype=np.float64), nan=0.0))
    idx = np.floor((u + _LIMIT) * (BINS / (2 * _LIMIT)))
    return np.clip(idx, 0, BINS - 1).astype(np.int64)


def edge_margin(edge: int) -> float:
    """The margin at threshold edge ``edge`` (0..BINS): predict positive when ``margin >= edge_margin``."""
    if edge <= 0:
        return -math.inf
    if edge >= BINS:
        return math.inf
    if edge == NATURAL_EDGE:
        return 0.0
    return float(np.sinh(-_LIMIT + edge * (2 * _LIMIT / BINS)))


class MarginHistogram:
    """``counts[c, m, i]``: rows of class c (0 negative, 1 positive) whose model-m margin is in bin i."""

    def __init__(self, num_models: int, counts: np.ndarray | None = None):
        self.num_models = num_models
        self.counts = np.zeros((2, num_models, BINS)) if counts is None else counts

    def add(self, margins: np.ndarray, y: np.ndarray) -> None:
        n, m = margins.shape
        if n == 0:
            return
        flat = bin_index(margins) + (np.arange(m) * BINS)[None, :]
        flat += (np.asarray(y).reshape(-1, 1) > 0.5).astype(np.int64) * (m * BINS)
        self.counts += np.bincount(flat.ravel(), minlength=2 * m * BINS).reshape(2, m, BINS)

    def curves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """True and false positives at every edge ``(M, BINS + 1)``, and the class totals ``(M,)``."""
        neg, pos = self.counts[0], self.counts[1]
        zero = np.zeros((self.num_models, 1))
        tp = np.concatenate([np.cumsum(pos[:, ::-1], axis=1)[:, ::-1], zero], axis=1)
        fp = np.concatenate([np.cumsum(neg[:, ::-1], axis=1)[:, ::-1], zero], axis=1)
        return tp, fp, pos.sum(axis=1), neg.sum(axis=1)


def criterion_curves(
    hist: MarginHistogram, criterion: str, beta: float, target_recall: float, target_precision: float
) -> np.ndarray:
    """The selection criterion at every threshold edge, ``(M, BINS + 1)``, higher is better."""
    tp, fp, p, n = hist.curves()
    p, n = p[:, None], n[:, None]
    if criterion == "accuracy":
        return (tp + (n - fp)) / np.maximum(p + n, 1)
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = tp / np.maximum(p, 1)
    if criterion == "f_beta":
        b2 = beta * beta
        denom = (1 + b2) * tp + b2 * (p - tp) + fp
        return np.divide((1 + b2) * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if criterion == "precision_at_target_recall":
        return np.where(recall >= target_recall, precision, -1.0 + recall)
    if criterion == "recall_at_target_precision":
        return np.where(precision >= target_precision, recall, -1.0 + precision)
    raise ValueError(f"unknown threshold criterion {criterion!r}")


def best_edges(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per model, the best value and the edge to use: the natural edge (margin 0) when it is among the best,
    else the middle of the first run of best edges (a threshold centred in the gap between classes)."""
    best = values.max(axis=1)
    edges = np.empty(len(values), dtype=np.int64)
    for m, row in enumerate(values):
        ties = row >= best[m] - 1e-12
        if ties[NATURAL_EDGE]:
            edges[m] = NATURAL_EDGE
            continue
        first = int(np.argmax(ties))
        last = first
        while last + 1 < len(row) and ties[last + 1]:
            last += 1
        edges[m] = (first + last + 1) // 2
    return best, edges


def roc_auc(counts: np.ndarray) -> float:
    """Area under the ROC curve of one model's histogram ``(2, BINS)``; rows in one bin count as ties."""
    neg, pos = counts[0], counts[1]
    p, n = pos.sum(), neg.sum()
    if p == 0 or n == 0:
        return math.nan
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (p * n))


def loss_values(loss: Loss, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row loss of outputs ``z`` (``(n, 1)`` or ``(n, 1, C)``) in float64."""
    value, _ = loss.value_grad(_NP, z, y, want_value=True)
    return np.asarray(value).reshape(len(z), -1)[:, 0]


class BinaryEvaluator:
    """Confusion counts at the model's threshold, a margin histogram for AUC, and the loss."""

    def __init__(self, loss: Loss, threshold_margin: float, beta: float):
        self.loss, self.threshold_margin, self.beta = loss, threshold_margin, beta
        self.state = {
            "tp": np.zeros(1),
            "fp": np.zeros(1),
            "tn": np.zeros(1),
            "fn": np.zeros(1),
            "loss": np.zeros(1),
            "rows": np.zeros(1),
            "hist": np.zeros((2, 1, BINS)),
        }

    def add(self, margin: np.ndarray, y: np.ndarray) -> None:
        margin = np.asarray(margin, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        predicted = margin >= self.threshold_margin
        actual = y > 0.5
        s = self.state
        s["tp"] += np.count_nonzero(predicted & actual)
        s["fp"] += np.count_nonzero(predicted & ~actual)
        s["tn"] += np.count_nonzero(~predicted & ~actual)
        s["fn"] += np.count_nonzero(~predicted & actual)
        s["loss"] += loss_values(self.loss, margin.reshape(-1, 1), y.reshape(-1, 1)).sum()
        s["rows"] += len(y)
        hist = MarginHistogram(1, s["hist"])
        hist.add(margin.reshape(-1, 1), y)

    def metrics(self, s: dict[str, np.ndarray]) -> dict[str, float]:
        tp, fp, tn, fn = (float(s[k][0]) for k in ("tp", "fp", "tn", "fn"))
        rows = float(s["rows"][0])
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        b2 = self.beta**2
        denom = (1 + b2) * tp + b2 * fn + fp
        return {
            "objective_loss": float(s["loss"][0]) / rows,
            "binary_classification_accuracy": (tp + tn) / rows,
            "precision": precision,
            "recall": recall,
            "binary_f_beta": (1 + b2) * tp / denom if denom else 0.0,
            "roc_auc_score": roc_auc(s["hist"][:, 0, :]),
        }


class MulticlassEvaluator:
    """Accuracy, top-k accuracy, DCG and per-class counts for the macro scores."""

    def __init__(self, loss: Loss, num_classes: int, top_k: int, beta: float):
        self.loss, self.num_classes, self.top_k, self.beta = loss, num_classes, min(top_k, num_classes), beta
        self.state = {
            "correct": np.zeros(1),
            "top_k": np.zeros(1),
            "dcg": np.zeros(1),
            "loss": np.zeros(1),
            "rows": np.zeros(1),
            "true_positive": np.zeros(num_classes),
            "predicted": np.zeros(num_classes),
            "actual": np.zeros(num_classes),
        }

    def add(self, logits: np.ndarray, y: np.ndarray) -> None:
        z = np.asarray(logits, dtype=np.float64)
        y = np.asarray(y).astype(np.int64).reshape(-1)
        n, c = z.shape
        s = self.state
        predicted = z.argmax(axis=1)
        true_logit = z[np.arange(n), y]
        rank = (z > true_logit[:, None]).sum(axis=1)  # classes scored above the true one
        s["correct"] += np.count_nonzero(predicted == y)
        s["top_k"] += np.count_nonzero(rank < self.top_k)
        s["dcg"] += (1.0 / np.log2(rank + 2.0)).sum()
        s["loss"] += loss_values(self.loss, z.reshape(n, 1, c), y).sum()
        s["rows"] += n
        s["true_positive"] += np.bincount(y[predicted == y], minlength=c)
        s["predicted"] += np.bincount(predicted, minlength=c)
        s["actual"] += np.bincount(y, minlength=c)

    def metrics(self, s: dict[str, np.ndarray]) -> dict[str, float]:
        rows = float(s["rows"][0])
        tp, predicted, actual = s["true_positive"], s["predicted"], s["actual"]
        labels = (actual > 0) | (predicted > 0)  # as scikit-learn: classes seen in truth or predictions
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)[labels]
        recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)[labels]
        b2 = self.beta**2
        denom = b2 * precision + recall
        f = np.divide((1 + b2) * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
        return {
            "objective_loss": float(s["loss"][0]) / rows,
            "multiclass_accuracy": float(s["correct"][0]) / rows,
            "multiclass_top_k_accuracy": float(s["top_k"][0]) / rows,
            "dcg": float(s["dcg"][0]) / rows,
            "macro_precision": float(precision.mean()) if len(precision) else 0.0,
            "macro_recall": float(recall.mean()) if len(recall) else 0.0,
            "macro_f_beta": float(f.mean()) if len(f) else 0.0,
        }


class RegressionEvaluator:
    """Squared and absolute errors and the training loss, in the label's own units."""

    def __init__(self, loss: Loss):
        self.loss = loss
        self.state = {"sse": np.zeros(1), "sae": np.zeros(1), "loss": np.zeros(1), "rows": np.zeros(1)}

    def add(self, prediction: np.ndarray, y: np.ndarray) -> None:
        p = np.asarray(prediction, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        r = p - y
        s = self.state
        s["sse"] += r @ r
        s["sae"] += np.abs(r).sum()
        s["loss"] += loss_values(self.loss, p.reshape(-1, 1), y.reshape(-1, 1)).sum()
        s["rows"] += len(y)

    def metrics(self, s: dict[str, np.ndarray]) -> dict[str, float]:
        rows = float(s["rows"][0])
        mse = float(s["sse"][0]) / rows
        return {
            "objective_loss": float(s["loss"][0]) / rows,
            "mse": mse,
            "rmse": math.sqrt(mse),
            "absolute_loss": float(s["sae"][0]) / rows,
        }

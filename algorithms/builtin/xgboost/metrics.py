"""Per-round metrics: SageMaker's own XGBoost metrics (exact across workers) and their streaming to the job.

SageMaker's container adds metrics XGBoost lacks (accuracy, f1, precision, recall, r2, mse, …), computed with
scikit-learn on each host's rows. Here each worker reduces its rows to sufficient statistics (a confusion
matrix; sums of squares), XGBoost's collective sums them, and every worker gets the metric of all rows.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb
from xgboost import collective

from ...training.reporter import Reporter

_CLASS_METRICS = ("accuracy", "balanced_accuracy", "f1", "f1_binary", "f1_macro", "precision", "precision_macro",
                  "precision_micro", "recall", "recall_macro", "recall_micro")
_REGRESSION_METRICS = ("mse", "r2")


def predicted_classes(predictions: np.ndarray, objective: str) -> np.ndarray:
    """Class indices from XGBoost's transformed predictions (probabilities, margins or labels)."""
    if predictions.ndim == 2:
        return np.argmax(predictions, axis=1)
    if objective == "binary:logitraw":
        return (predictions > 0).astype(np.int64)
    if objective == "multi:softmax":
        return predictions.astype(np.int64)
    return (predictions > 0.5).astype(np.int64)


def confusion(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: row = true class, column = predicted class."""
    y = labels.astype(np.int64)
    return np.bincount(y * k + predicted, minlength=k * k).reshape(k, k).astype(np.float64)


def class_metric(name: str, matrix: np.ndarray) -> float:
    """scikit-learn's value of a classification metric, from the confusion matrix of all rows."""
    total = matrix.sum()
    if total == 0:
        return 0.0
    tp = np.diag(matrix)
    true_count = matrix.sum(axis=1)
    pred_count = matrix.sum(axis=0)
    if name == "accuracy":
        return float(tp.sum() / total)
    present = (true_count > 0) | (pred_count > 0)  # scikit-learn's labels: seen in y_true or y_pred
    precision = np.divide(tp, pred_count, out=np.zeros_like(tp), where=pred_count > 0)
    recall = np.divide(tp, true_count, out=np.zeros_like(tp), where=true_count > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    binary = matrix.shape[0] == 2
    if name == "balanced_accuracy":
        return float(recall[true_count > 0].mean())
    if name in ("f1", "f1_macro"):
        return float(f1[present].mean())
    if name in ("precision_micro", "recall_micro"):
        return float(tp.sum() / total)
    if name == "f1_binary" or (binary and name in ("precision", "recall")):
        return float({"f1_binary": f1, "precision": precision, "recall": recall}[name][1])
    if name in ("precision", "precision_macro"):
        return float(precision[present].mean())
    if name in ("recall", "recall_macro"):
        return float(recall[present].mean())
    raise ValueError(f"unknown classification metric {name}")


class SageMakerMetrics:
    """``custom_metric`` for xgboost.train: the SageMaker-only metrics, reduced across workers."""

    def __init__(self, names: list[str], objective: str, num_class: int | None):
        self.names = names
        self.objective = objective
        self.k = int(num_class) if objective.startswith("multi:") else 2

    def __call__(self, predictions: np.ndarray, dmatrix: xgb.DMatrix) -> list[tuple[str, float]]:
        labels = dmatrix.get_label()
        out = []
        if any(n in _CLASS_METRICS for n in self.names):
            predicted = predicted_classes(np.asarray(predictions), self.objective)
            predicted = np.clip(predicted, 0, self.k - 1)
            local = confusion(labels, predicted, self.k)
            matrix = collective.allreduce(local.reshape(-1), collective.Op.SUM).reshape(local.shape)
        if any(n in _REGRESSION_METRICS for n in self.names):
            p = np.asarray(predictions, np.float64).reshape(-1)
            y = labels.astype(np.float64)
            sums = collective.allreduce(np.array([len(y), y.sum(), (y * y).sum(), ((y - p) ** 2).sum()]),
                                        collective.Op.SUM)
        for name in self.names:
            if name in _CLASS_METRICS:
                out.append((name, class_metric(name, matrix)))
            else:
                n, sy, syy, sse = sums
                if name == "mse":
                    out.append((name, float(sse / n) if n else 0.0))
                else:
                    sst = syy - sy * sy / n if n else 0.0
                    out.append((name, float(1 - sse / sst) if sst > 0 else 0.0))
        return out


class RoundReporter(xgb.callback.TrainingCallback):
    """Streams every round's metrics (``validation:auc``…) and XGBoost's own log line; rank 0 only."""

    def __init__(self, reporter: Reporter, is_master: bool, num_round: int, rows: int):
        self.reporter = reporter
        self.is_master = is_master
        self.num_round = num_round
        self.rows = rows
        self.history: dict[str, list[float]] = {}

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        parts = [f"[{epoch}]"]
        for data, metrics in evals_log.items():
            for name, values in metrics.items():
                value = values[-1][0] if isinstance(values[-1], tuple) else values[-1]
                key = f"{data}:{name}"
                self.history.setdefault(key, []).append(float(value))
                parts.append(f"{data}-{name}:{value:.5f}")
                if self.is_master:
                    self.reporter.metric(key, float(value), epoch=epoch)
        if self.is_master:
            self.reporter.log("\t".join(parts))
        self.reporter.progress(self.rows, epoch=epoch, total_records=self.rows, total_epochs=self.num_round)
        return False

    def at(self, iteration: int) -> dict[str, float]:
        """Every metric's value after round ``iteration``."""
        return {k: v[iteration] for k, v in self.history.items() if iteration < len(v)}

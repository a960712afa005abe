"""RCF's test metrics: scores above SageMaker's threshold (mean + 3 standard deviations of the scores) are
predicted anomalies, compared with the test channel's 0/1 labels (1: anomaly)."""

from __future__ import annotations

import numpy as np

THRESHOLD_SIGMAS = 3.0


def anomaly_threshold(scores: np.ndarray) -> float:
    """SageMaker's threshold: the scores' mean plus three (population) standard deviations."""
    return float(scores.mean() + THRESHOLD_SIGMAS * scores.std())


def threshold_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``accuracy``, ``precision``, ``recall`` and ``f1`` of ``score > threshold`` against ``labels``; precision,
    recall and f1 are 0 when undefined (nothing predicted, or no anomaly in the labels), as scikit-learn reports
    them with ``zero_division=0``."""
    predicted = scores > anomaly_threshold(scores)
    actual = labels > 0.5
    tp = float(np.sum(predicted & actual))
    fp = float(np.sum(predicted & ~actual))
    fn = float(np.sum(~predicted & actual))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float(np.mean(predicted == actual)), "precision": precision, "recall": recall, "f1": f1}


__all__ = ["THRESHOLD_SIGMAS", "anomaly_threshold", "threshold_metrics"]

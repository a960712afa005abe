"""FM's metrics (SageMaker's names) from sums that add up across batches and workers.

Binary classifier: ``binary_classification_accuracy`` and ``binary_f_beta`` (F1) at threshold 0.5, and
``binary_classification_cross_entropy`` (mean log loss, natural log). Regressor: ``rmse``.
"""

from __future__ import annotations

import math

import numpy as np

# Per-row quantities summed into the stats vector, in order.
BINARY_STATS = ("log_loss", "correct", "true_positive", "false_positive", "false_negative")
REGRESSION_STATS = ("squared_error",)


def num_stats(binary: bool) -> int:
    return len(BINARY_STATS if binary else REGRESSION_STATS)


def row_terms(ops, raw, y, binary: bool) -> list:
    """Per-row terms of the stats (on the ops' device) for raw scores ``raw`` and labels ``y``."""
    if binary:
        predicted = raw >= 0  # sigmoid(raw) >= 0.5
        actual = y > 0.5
        log_loss = ops.softplus(raw) - y * raw
        return [log_loss, predicted == actual, predicted & actual, predicted & ~actual, ~predicted & actual]
    err = raw - y
    return [err * err]


def metrics_from_stats(stats: np.ndarray, rows: float, binary: bool) -> dict[str, float]:
    """Metric values (without the channel prefix); empty when no rows were seen."""
    if rows <= 0:
        return {}
    if not binary:
        return {"rmse": math.sqrt(float(stats[0]) / rows)}
    log_loss, correct, tp, fp, fn = (float(v) for v in stats)
    denominator = 2 * tp + fp + fn
    return {"binary_classification_accuracy": correct / rows,
            "binary_classification_cross_entropy": log_loss / rows,
            "binary_f_beta": 2 * tp / denominator if denominator > 0 else 0.0}


def check_labels(y: np.ndarray | None, binary: bool, channel: str, first_row: int) -> np.ndarray:
    """Labels as a float32 vector; binary labels must be 0 or 1 (error names the channel and row)."""
    if y is None:
        raise ValueError(f"the {channel} channel has records without labels; factorization-machines is "
                         "supervised (every record needs a label)")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"the {channel} channel has vector labels of shape {y.shape[1:]}; "
                         "factorization-machines needs one scalar label per record")
    y = y.astype(np.float32, copy=False)
    bad = np.flatnonzero((y != 0) & (y != 1)) if binary else np.flatnonzero(~np.isfinite(y))
    if len(bad):
        what = "0 or 1 for predictor_type binary_classifier" if binary else "a finite number"
        raise ValueError(f"record {first_row + int(bad[0])} of this worker's {channel} channel has label "
                         f"{float(y[bad[0]])!r}; labels must be {what}")
    return y

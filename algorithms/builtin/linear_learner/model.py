"""The trained Linear Learner model: coefficients in the original feature space, SageMaker's responses.

Responses (SageMaker's keys):

- binary_classifier: ``score`` (P(label=1) for logistic loss, the raw margin for hinge loss) and
  ``predicted_label`` (1.0 when the margin reaches the calibrated threshold);
- multiclass_classifier: ``score``, the vector of class probabilities, and ``predicted_label``,
  its argmax;
- regressor: ``score``, the prediction.

Normalization of features and label is folded into ``coefficients`` and ``intercept``, so a model
is ``x @ coefficients + intercept`` on raw features, dense or sparse.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from ...artifact import ArtifactManifest, load_arrays
from ...batch import Batch
from ..base import Model, Output

_SCALAR_OUTPUTS = (Output("score"), Output("predicted_label"))
_OUTPUTS = {
    "binary_classifier": _SCALAR_OUTPUTS,
    "multiclass_classifier": (Output("score", "vector"), Output("predicted_label")),
    "regressor": (Output("score"),),
}


class LinearLearnerModel(Model):
    algorithm = "linear-learner"
    outputs = _SCALAR_OUTPUTS  # per instance: see _OUTPUTS

    def __init__(
        self,
        hyperparameters: dict[str, str],
        feature_dim: int,
        coefficients: np.ndarray,
        intercept: np.ndarray,
        threshold_margin: float = 0.0,
        selected: dict[str, float] | None = None,
        metrics: dict[str, float] | None = None,
    ):
        super().__init__(hyperparameters, feature_dim)
        self.predictor_type = self.hyperparameters.get("predictor_type", "")
        if self.predictor_type not in _OUTPUTS:
            raise ValueError(f"linear-learner model: unknown predictor_type {self.predictor_type!r}")
        self.loss = self.hyperparameters.get("loss", "auto")
        self.outputs = _OUTPUTS[self.predictor_type]
        coef = np.asarray(coefficients, dtype=np.float32)
        self._coef = coef.reshape(self.feature_dim, -1)
        self._coef64 = self._coef.astype(np.float64)  # scoring multiplies in float64; convert once
        self._intercept = np.asarray(intercept, dtype=np.float32).reshape(-1)
        if self._intercept.shape[0] != self._coef.shape[1]:
            raise ValueError(
                f"linear-learner model: {self._coef.shape[1]} outputs but "
                f"{self._intercept.shape[0]} intercepts"
            )
        self.threshold_margin = float(threshold_margin)
        self.selected = dict(selected or {})
        self.metrics: dict[str, float] = dict(metrics or {})

    # what users read ------------------------------------------------------------------------------
    @property
    def coefficients(self) -> np.ndarray:
        """``(feature_dim,)``, or ``(feature_dim, num_classes)`` for a multiclass classifier."""
        return self._coef[:, 0].copy() if self._coef.shape[1] == 1 else self._coef.copy()

    @property
    def intercept(self) -> float | np.ndarray:
        return float(self._intercept[0]) if len(self._intercept) == 1 else self._intercept.copy()

    @property
    def threshold(self) -> float | None:
        """The calibrated decision threshold on ``score`` (binary classifiers only)."""
        if self.predictor_type != "binary_classifier":
            return None
        if self.loss == "logistic":
            return float(special.expit(self.threshold_margin))
        return self.threshold_margin

    # prediction -----------------------------------------------------------------------------------
    def decision_function(self, batch: Batch) -> np.ndarray:
        """Raw outputs ``x @ coefficients + intercept`` ``(n, K)`` in float64."""
        self.check_features(batch)
        x = batch.features
        out = x @ self._coef64
        return np.asarray(out, dtype=np.float64) + self._intercept

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        z = self.decision_function(batch)
        if self.predictor_type == "regressor":
            return {"score": z[:, 0].astype(np.float32)}
        if self.predictor_type == "multiclass_classifier":
            probs = special.softmax(z, axis=1)
            return {"score": probs.astype(np.float32), "predicted_label": z.argmax(axis=1).astype(np.float32)}
        margin = z[:, 0]
        score = special.expit(margin) if self.loss == "logistic" else margin
        label = (margin >= self.threshold_margin).astype(np.float32)
        return {"score": score.astype(np.float32), "predicted_label": label}

    # persistence ----------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        threshold = self.threshold
        arrays = {
            "coefficients": self._coef,
            "intercept": self._intercept,
            "threshold_margin": np.array(self.threshold_margin),
            "threshold": np.array(math.nan if threshold is None else threshold),
        }
        for key, value in self.selected.items():
            arrays["selected_" + key] = np.array(float(value))
        return arrays

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, str], feature_dim: int
    ) -> LinearLearnerModel:
        for key in ("coefficients", "intercept", "threshold_margin"):
            if key not in arrays:
                raise ValueError(f"linear-learner model: the artifact has no {key!r} array")
        selected = {k[len("selected_") :]: float(v) for k, v in arrays.items() if k.startswith("selected_")}
        return cls(
            hyperparameters,
            feature_dim,
            arrays["coefficients"],
            arrays["intercept"],
            float(arrays["threshold_margin"]),
            selected,
        )

    @classmethod
    def load(cls, directory: str, manifest: ArtifactManifest) -> LinearLearnerModel:
        model = cls.from_arrays(load_arrays(directory), manifest.hyperparameters, manifest.feature_dim)
        model.metrics = dict(manifest.metrics)
        return model

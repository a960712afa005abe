"""The Factorization Machines model: ``w0``, ``w`` and ``V``, scored as SageMaker's ``score`` /
``predicted_label``."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from ...artifact import ArtifactError
from ...batch import Batch
from ..base import Model, Output
from .params import BINARY
from .trainer import as_float32_features, raw_scores

NAME = "factorization-machines"


class FactorizationMachinesModel(Model):
    """``score`` (sigmoid of ŷ) and ``predicted_label`` (score >= 0.5) for a binary classifier; ``score``
    (ŷ) for a regressor. The learned ``w0``, ``w`` (d,) and ``V`` (d, k) are attributes."""

    algorithm = NAME
    outputs = (Output("score"), Output("predicted_label"))

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int, w0: float, w: np.ndarray,
                 V: np.ndarray):
        super().__init__(hyperparameters, feature_dim)
        predictor_type = self.hyperparameters.get("predictor_type")
        if predictor_type not in (BINARY, "regressor"):
            raise ArtifactError(f"factorization-machines model has predictor_type {predictor_type!r}; "
                                "expected binary_classifier or regressor")
        self.binary = predictor_type == BINARY
        if not self.binary:
            self.outputs = (Output("score"),)
        w = np.asarray(w, np.float32).reshape(-1)
        V = np.asarray(V, np.float32)
        if w.shape != (self.feature_dim,) or V.ndim != 2 or V.shape[0] != self.feature_dim:
            raise ArtifactError(f"factorization-machines model arrays do not match feature_dim "
                                f"{self.feature_dim}: w has shape {w.shape}, V has shape {V.shape}")
        self.w0 = float(w0)
        self.w = w
        self.V = V
        self._theta = np.ascontiguousarray(np.column_stack([w, V]))
        self._v_squared = V * V

    @property
    def num_factors(self) -> int:
        return self.V.shape[1]

    def raw(self, batch: Batch) -> np.ndarray:
        """ŷ before the link function (the log-odds for a binary classifier)."""
        self.check_features(batch)
        return self.raw_features(as_float32_features(batch, self.feature_dim, "input"))

    def raw_features(self, x: np.ndarray | sp.csr_matrix) -> np.ndarray:
        return raw_scores(x, self.w0, self._theta, self._v_squared).astype(np.float32, copy=False)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        raw = self.raw(batch)
        if not self.binary:
            return {"score": raw}
        score = expit(raw).astype(np.float32)
        return {"score": score, "predicted_label": (score >= 0.5).astype(np.float32)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"w0": np.array([self.w0], np.float32), "w": self.w, "V": self.V}

    @classmethod
    def expected_arrays(cls, hyperparameters, feature_dim):
        k = hyperparameters.get("num_factors")
        return {"w0": (1,), "w": (feature_dim,), "V": (feature_dim, int(k) if k and str(k).isdigit() else None)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, str],
                    feature_dim: int) -> FactorizationMachinesModel:
        missing = sorted({"w0", "w", "V"} - set(arrays))
        if missing:
            raise ArtifactError(f"factorization-machines model lacks the array(s) {', '.join(missing)}")
        return cls(hyperparameters, feature_dim, float(np.asarray(arrays["w0"]).reshape(-1)[0]), arrays["w"],
                   arrays["V"])

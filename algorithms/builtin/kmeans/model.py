"""The K-Means model: ``k`` centers, scored as SageMaker's ``closest_cluster`` / ``distance_to_cluster``."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...batch import Batch
from ..base import Model, Output


class KMeansModel(Model):
    """``k`` cluster centers; answers SageMaker's ``closest_cluster`` (float) and ``distance_to_cluster``."""

    algorithm = "kmeans"
    outputs = (Output("closest_cluster"), Output("distance_to_cluster"))

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int, centroids: np.ndarray):
        super().__init__(hyperparameters, feature_dim)
        centroids = np.asarray(centroids, dtype=np.float64)
        if centroids.ndim != 2 or centroids.shape[1] != self.feature_dim:
            raise ValueError(f"k-means centroids must be (k, {self.feature_dim}), got {centroids.shape}")
        self.centroids = centroids

    @property
    def cluster_centers(self) -> np.ndarray:
        """``(k, feature_dim)``; row ``i`` is cluster ``i``."""
        return self.centroids

    @property
    def k(self) -> int:
        return len(self.centroids)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        labels, d2 = closest_centers(batch.features, self.centroids)
        return {"closest_cluster": labels.astype(np.float32),
                "distance_to_cluster": np.sqrt(d2).astype(np.float32)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids}

    @classmethod
    def expected_arrays(cls, hyperparameters, feature_dim):
        k = hyperparameters.get("k")
        return {"centroids": (int(k) if k and str(k).isdigit() else None, feature_dim)}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls(hyperparameters, feature_dim, arrays["centroids"])


def closest_centers(features, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest center and squared distance per row (float64; exact distance for dense rows)."""
    c2 = np.einsum("ij,ij->i", centers, centers)
    if sp.issparse(features):
        x = sp.csr_matrix(features, dtype=np.float64)
        x2 = np.asarray(x.multiply(x).sum(axis=1)).ravel()
        scores = c2[None, :] - 2.0 * np.asarray(x @ centers.T)
        labels = scores.argmin(axis=1)
        d2 = np.maximum(x2 + scores[np.arange(len(labels)), labels], 0.0)
        return labels, d2
    x = np.asarray(features, dtype=np.float64)
    scores = x @ centers.T
    scores *= -2.0
    scores += c2[None, :]
    labels = scores.argmin(axis=1)
    diff = x - centers[labels]
    return labels, np.einsum("ij,ij->i", diff, diff)


__all__ = ["KMeansModel", "closest_centers"]

"""The Random Cut Forest model: the forest's flat arrays, scored as SageMaker's ``score`` (JSON: ``scores``)."""

from __future__ import annotations

import numpy as np

from ...batch import Batch
from ..base import Model, Output
from .forest import Forest


def score_scale(tree_mass: float, num_trees: int) -> float:
    """What the summed expected codisps of a row are multiplied by: the mean over trees, over the tree's size,
    times ``log2(1 + size)``. A row cut off at the root of every tree (codisp = size) scores ``log2(1 + size)``,
    the top of SageMaker's (the AWS RCF library's) score scale, where normal rows score near or below 1."""
    return float(np.log2(1.0 + tree_mass) / (tree_mass * num_trees))


class RandomCutForestModel(Model):
    """``num_trees`` random cut trees; ``score`` is the anomaly score (higher: more anomalous)."""

    algorithm = "randomcutforest"
    outputs = (Output("score"),)
    json_envelope = "scores"

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int, forest: Forest, scale: float):
        super().__init__(hyperparameters, feature_dim)
        if forest.dim != self.feature_dim:
            raise ValueError(f"the forest's boxes have {forest.dim} features; feature_dim is {self.feature_dim}")
        self.forest = forest
        self.scale = float(scale)

    @property
    def num_trees(self) -> int:
        return self.forest.num_trees

    @property
    def num_samples_per_tree(self) -> int:
        """Points each tree was built from: ``num_samples_per_tree``, or every record if there were fewer."""
        return int(self.forest.tree_mass)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        x = check_finite(batch.dense(np.float32), "the batch")
        total = self.forest.summed_codisp(x)  # summed tree by tree, as the JVM scorer does
        return {"score": (total * self.scale).astype(np.float32)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.forest.to_arrays(), "score_scale": np.array([self.scale])}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        forest = Forest(**{name: arrays[name] for name in Forest.ARRAYS})
        return cls(hyperparameters, feature_dim, forest, float(arrays["score_scale"][0]))


def check_finite(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` itself, or a ValueError naming the first non-finite value's row and feature."""
    finite = np.isfinite(x)
    if not finite.all():
        row, feature = np.argwhere(~finite)[0]
        raise ValueError(f"{what} holds a non-finite feature value ({x[row, feature]}) at row {row}, feature "
                         f"{feature}; Random Cut Forest needs finite features")
    return x


__all__ = ["RandomCutForestModel", "check_finite", "score_scale"]

"""The k-NN model: a faiss index of the sampled training vectors and their labels; SageMaker's outputs.

``predict`` answers ``predicted_label``: the most frequent label among the ``k`` nearest neighbours for the
classifier (ties go to the smallest label, as scikit-learn's ``KNeighborsClassifier`` breaks them), their mean for
the regressor. ``configured(verbose=True)`` (the Spark Param ``verbose``, the ``Accept: ...; verbose=true``
header at an endpoint) adds ``labels`` and ``distances``: the neighbours' labels and distances, closest first
(squared Euclidean for L2; inner products, largest first, for INNER_PRODUCT and COSINE).

Files: ``index.faiss`` (faiss's serialized index), ``labels.npy`` (float32, one per indexed vector) and, with a
dimension reduction, ``reduction.npz``. Nothing is pickled.
"""

from __future__ import annotations

import os

import numpy as np

from ...artifact import load_arrays, save_arrays
from ...batch import Batch
from ...hyperparameters import HyperparameterSpec
from ..base import Model, Output
from . import index as faiss_index
from . import params
from .reduction import Reduction

INDEX_FILE = "index.faiss"
LABELS_FILE = "labels.npy"
REDUCTION_FILE = "reduction.npz"
VERBOSE_OUTPUTS = (Output("labels", kind="vector"), Output("distances", kind="vector"))


class KNNModel(Model):
    algorithm = "knn"

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int, index, labels: np.ndarray,
                 reduction: Reduction, verbose: bool = False):
        super().__init__(hyperparameters, feature_dim)
        self.hp = _parse(hyperparameters)
        self.k = int(self.hp["k"])
        self.predictor_type = self.hp["predictor_type"]
        self.metric = self.hp["index_metric"]
        self.index = index
        self.labels = np.ascontiguousarray(labels, np.float32).reshape(-1)
        self.reduction = reduction
        self.verbose = bool(verbose)
        if self.index.ntotal != len(self.labels):
            raise ValueError(f"the k-NN index holds {self.index.ntotal} vectors but there are {len(self.labels)} "
                             "labels")
        if self.index.ntotal < self.k:
            raise ValueError(f"the k-NN index holds {self.index.ntotal} vectors, fewer than k ({self.k})")
        if reduction.input_dim != self.feature_dim:
            raise ValueError(f"the dimension reduction takes {reduction.input_dim} features; feature_dim is "
                             f"{self.feature_dim}")

    @property
    def outputs(self) -> tuple[Output, ...]:  # type: ignore[override]
        return (Output("predicted_label"), *(VERBOSE_OUTPUTS if self.verbose else ()))

    def configured(self, verbose: bool = False, **unknown) -> KNNModel:
        """The same index answering the verbose outputs too (``labels``, ``distances``) when ``verbose``."""
        if unknown:
            raise ValueError(f"k-NN scoring options are: verbose; got {', '.join(sorted(unknown))}")
        return KNNModel(self.hyperparameters, self.feature_dim, self.index, self.labels, self.reduction, verbose)

    def for_accept(self, parameters: dict[str, str]) -> KNNModel:
        """SageMaker's ``Accept: application/json; verbose=true`` asks for the neighbours' labels and distances."""
        verbose = parameters.get("verbose", "").strip().lower() in ("true", "1")
        return self.configured(verbose=True) if verbose and not self.verbose else self

    @property
    def index_size(self) -> int:
        return int(self.index.ntotal)

    def vectors(self, features) -> np.ndarray:
        """Rows as the index holds them (see :func:`index_vectors`)."""
        return index_vectors(features, self.reduction, self.metric, self.index.d)

    def neighbours(self, features) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indexed-vector ids ``(n, k)`` of each row's nearest neighbours, closest first."""
        return faiss_index.search(self.index, self.vectors(features), self.k)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        x = batch.dense(np.float32)
        if not np.isfinite(x).all():
            row, feature = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"the batch holds a non-finite feature value ({x[row, feature]}) at row {row}, feature "
                             f"{feature}")
        distances, ids = self.neighbours(x)
        labels = self.labels[ids]
        if self.predictor_type == "classifier":
            predicted = majority_vote(labels)
        else:
            predicted = labels.astype(np.float64).mean(axis=1).astype(np.float32)
        out = {"predicted_label": predicted}
        if self.verbose:
            out["labels"] = labels
            out["distances"] = distances.astype(np.float32)
        return out

    # persistence --------------------------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        with open(os.path.join(directory, INDEX_FILE), "wb") as f:
            f.write(faiss_index.to_bytes(self.index).tobytes())
        with open(os.path.join(directory, LABELS_FILE), "wb") as f:
            np.save(f, self.labels, allow_pickle=False)
        reduction = self.reduction.to_arrays()
        if reduction:
            save_arrays(directory, reduction, REDUCTION_FILE)

    @classmethod
    def load(cls, directory: str, manifest) -> KNNModel:
        with open(os.path.join(directory, INDEX_FILE), "rb") as f:
            index = faiss_index.from_bytes(np.frombuffer(f.read(), np.uint8))
        labels = np.load(os.path.join(directory, LABELS_FILE), allow_pickle=False)
        arrays = load_arrays(directory, REDUCTION_FILE) if REDUCTION_FILE in manifest.files else {}
        return cls(manifest.hyperparameters, manifest.feature_dim, index, labels,
                   _reduction(manifest.hyperparameters, manifest.feature_dim, arrays))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"index": faiss_index.to_bytes(self.index), "labels": self.labels, **self.reduction.to_arrays()}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim) -> KNNModel:
        return cls(hyperparameters, feature_dim, faiss_index.from_bytes(arrays["index"]), arrays["labels"],
                   _reduction(hyperparameters, feature_dim, arrays))


def index_vectors(features, reduction: Reduction, metric: str, width: int, backend=None) -> np.ndarray:
    """Rows as the index holds them: projected by ``reduction``, normalized for COSINE, zero-padded to ``width``
    (IVFPQ pads to a multiple of its sub-quantizers). Training and queries go through this one path."""
    x = reduction.apply(np.asarray(features, np.float32), backend)
    if metric == "COSINE":
        x = np.array(x, copy=True)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        np.divide(x, norms, out=x, where=norms > 0)
    if x.shape[1] < width:
        x = np.concatenate([x, np.zeros((len(x), width - x.shape[1]), np.float32)], axis=1)
    return np.ascontiguousarray(x, np.float32)


def majority_vote(labels: np.ndarray) -> np.ndarray:
    """Per row of ``labels`` (n, k), its most frequent value; among equally frequent values the smallest."""
    ordered = np.sort(labels, axis=1)
    n, k = ordered.shape
    if k == 1:
        return ordered[:, 0].copy()
    # runs of equal values in each sorted row: where each run starts, and its length
    starts = np.ones((n, k), bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run_id = np.cumsum(starts, axis=1) - 1  # the run each position belongs to, per row
    lengths = np.zeros((n, k), np.int64)
    np.add.at(lengths, (np.repeat(np.arange(n), k), run_id.reshape(-1)), 1)
    best_run = lengths.argmax(axis=1)  # the first longest run: the smallest value among the most frequent
    first_of_run = np.argmax(run_id == best_run[:, None], axis=1)
    return ordered[np.arange(n), first_of_run]


def _parse(hyperparameters: dict[str, str]) -> dict:
    spec: HyperparameterSpec = params.HYPERPARAMETERS
    return spec.parse(hyperparameters, ignore_unknown=True)


def _reduction(hyperparameters: dict[str, str], feature_dim: int, arrays: dict[str, np.ndarray]) -> Reduction:
    hp = _parse(hyperparameters)
    kind = hp["dimension_reduction_type"]
    target = int(hp["dimension_reduction_target"]) if kind != "none" else int(feature_dim)
    return Reduction.from_arrays(kind, int(feature_dim), target, arrays)


__all__ = ["INDEX_FILE", "KNNModel", "LABELS_FILE", "REDUCTION_FILE", "index_vectors", "majority_vote"]

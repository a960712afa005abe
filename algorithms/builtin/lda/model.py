"""A trained LDA model: topics, their Dirichlet prior, and each document's topic mixture."""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from ...artifact import ArtifactManifest, load_arrays, save_arrays
from ...backend import Backend, NumpyBackend
from ...batch import Batch
from ..bag_of_words import check_counts
from ..base import Model, Output
from ..topic_words import VOCABULARY_FILE, saved_vocabulary, top_words, write_vocabulary
from .inference import infer, mixtures
from .kernels import lda_kernels


class LDAModel(Model):
    """SageMaker's ``topic_mixture`` per document (k numbers summing to 1).

    Arrays: ``alpha`` (k,) the Dirichlet prior of the mixtures, strongest first, and ``topics`` (k × V) each
    topic's word distribution (rows sum to 1); ``vocab.txt`` beside them when training had a vocabulary.
    """

    algorithm = "lda"
    outputs = (Output("topic_mixture", kind="vector"),)

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int, alpha: np.ndarray, topics: np.ndarray,
                 vocabulary: list[str] | None = None, backend: Backend | None = None):
        super().__init__(hyperparameters, feature_dim)
        self.alpha = np.asarray(alpha, dtype=np.float64).ravel()
        self.topics = np.asarray(topics, dtype=np.float64)
        if self.topics.shape != (len(self.alpha), self.feature_dim):
            raise ValueError(f"LDA arrays do not fit feature_dim {self.feature_dim}: alpha {self.alpha.shape}, "
                             f"topics {self.topics.shape}")
        if vocabulary is not None and len(vocabulary) != self.feature_dim:
            raise ValueError(f"the vocabulary has {len(vocabulary)} words for feature_dim {self.feature_dim}")
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        self._ops = lda_kernels(backend or NumpyBackend())
        self._device: tuple | None = None

    @property
    def num_topics(self) -> int:
        return len(self.alpha)

    def _on_device(self):
        if self._device is None:
            ops = self._ops
            self._device = (ops.asarray(np.ascontiguousarray(self.topics.T), dtype=np.float64),
                            ops.asarray(self.alpha, dtype=np.float64))
        return self._device

    def gammas(self, features, place: str = "row") -> np.ndarray:
        """Variational Dirichlet parameters of each row's mixture (empty rows get ``alpha``)."""
        counts = _counts(features, place)
        topics_t, alpha = self._on_device()
        gamma, _, _ = infer(self._ops, counts, topics_t, alpha)
        return gamma

    def topic_mixture(self, features) -> np.ndarray:
        return mixtures(self.gammas(features))

    def log_likelihood(self, features, place: str = "row") -> tuple[float, float]:
        """(Σ log p(word | the document's inferred mixture) over every word, number of words)."""
        counts = _counts(features, place)
        topics_t, alpha = self._on_device()
        _, loglik, _ = infer(self._ops, counts, topics_t, alpha, with_loglik=True)
        return float(loglik), float(counts.sum())

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        return {"topic_mixture": self.topic_mixture(batch.features).astype(np.float32)}

    def describe_topics(self, max_terms: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(word ids, weights), each k × max_terms, heaviest first: MLlib's ``describeTopics``."""
        ids = top_words(self.topics, max_terms)
        return ids, np.take_along_axis(self.topics, ids, axis=1)

    def top_words(self, n: int = 10) -> list[list[str]]:
        if self.vocabulary is None:
            raise ValueError("the model has no vocabulary (train with one: the vocabulary Param or an auxiliary "
                             "channel's vocab.txt)")
        ids, _ = self.describe_topics(n)
        return [[self.vocabulary[i] for i in row] for row in ids.tolist()]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"alpha": self.alpha, "topics": self.topics}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls(hyperparameters, feature_dim, arrays["alpha"], arrays["topics"])

    def save(self, directory: str) -> None:
        save_arrays(directory, self.to_arrays())
        if self.vocabulary is not None:
            write_vocabulary(os.path.join(directory, VOCABULARY_FILE), self.vocabulary)

    @classmethod
    def load(cls, directory: str, manifest: ArtifactManifest) -> LDAModel:
        arrays = load_arrays(directory)
        return cls(manifest.hyperparameters, manifest.feature_dim, arrays["alpha"], arrays["topics"],
                   saved_vocabulary(directory))


def _counts(features, place: str) -> sp.csr_matrix:
    """Checked word counts as CSR float64; empty rows kept (their mixture is the prior's mean)."""
    check_counts(features, place)
    counts = sp.csr_matrix(features, dtype=np.float64)
    counts.sum_duplicates()
    return counts


__all__ = ["LDAModel"]

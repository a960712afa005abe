"""A trained NTM: each document's topic weights, topics' word rankings, the decoder's word distributions."""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from ...artifact import ArtifactManifest, load_arrays, save_arrays
from ...batch import Batch
from ..bag_of_words import check_counts
from ..base import Model, Output
from ..topic_words import VOCABULARY_FILE, saved_vocabulary, top_words, write_vocabulary
from .params import encoder_sizes

SCORING_ROWS = 1024  # documents per forward pass at inference (bounds the n × V decoder output)


def build_network(hp: dict, feature_dim: int):
    from .network import TopicVAE

    k = int(hp["num_topics"])
    return TopicVAE(feature_dim, k, encoder_sizes(hp.get("encoder_layers"), k),
                    str(hp.get("encoder_layers_activation") or "sigmoid"), bool(hp.get("batch_norm")))


class NTMModel(Model):
    """SageMaker's ``topic_weights`` per document (k numbers summing to 1).

    Arrays: the network's parameters by their torch names (``topics`` is β, k × V; ``background`` b); the
    vocabulary as ``vocab.txt`` when training had one.
    """

    algorithm = "ntm"
    outputs = (Output("topic_weights", kind="vector"),)

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int, arrays: dict[str, np.ndarray],
                 vocabulary: list[str] | None = None):
        super().__init__(hyperparameters, feature_dim)
        from .params import HYPERPARAMETERS

        self.hp = HYPERPARAMETERS.parse({k: v for k, v in hyperparameters.items() if k in HYPERPARAMETERS},
                                        ignore_unknown=True)
        self.arrays = {name: np.asarray(value) for name, value in arrays.items()}
        topics = self.arrays["topics"]
        if topics.shape[1] != self.feature_dim:
            raise ValueError(f"NTM topics {topics.shape} do not fit feature_dim {self.feature_dim}")
        if vocabulary is not None and len(vocabulary) != self.feature_dim:
            raise ValueError(f"the vocabulary has {len(vocabulary)} words for feature_dim {self.feature_dim}")
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        self._network = None

    @classmethod
    def from_network(cls, hyperparameters, feature_dim, network, vocabulary=None) -> NTMModel:
        arrays = {name: value.detach().cpu().numpy() for name, value in network.state_dict().items()}
        return cls(hyperparameters, feature_dim, arrays, vocabulary)

    @property
    def num_topics(self) -> int:
        return int(self.arrays["topics"].shape[0])

    @property
    def topics(self) -> np.ndarray:
        """β (k × V): row k scores topic k's words (higher: more characteristic)."""
        return self.arrays["topics"]

    def network(self):
        if self._network is None:
            import torch

            network = build_network(self.hp, self.feature_dim)
            network.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.arrays.items()})
            network.eval()
            self._network = network
        return self._network

    def _forward(self, features, fn):
        import torch

        from .network import BagOfWords

        check_counts(features)
        counts = sp.csr_matrix(features, dtype=np.float32)
        network = self.network()
        out = []
        with torch.no_grad():
            for lo in range(0, counts.shape[0], SCORING_ROWS):
                out.append(fn(network, BagOfWords(counts[lo:lo + SCORING_ROWS])))
        return out

    def topic_weights(self, features) -> np.ndarray:
        parts = self._forward(features, lambda net, bow: net.topic_weights(bow).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.num_topics), np.float32)

    def word_distribution(self, features) -> np.ndarray:
        """p(w | θ) (n × V) of each document's topic weights: the decoder's reconstruction."""
        parts = self._forward(features, lambda net, bow: net.log_word_probs(net.topic_weights(bow)).exp().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.feature_dim), np.float32)

    def log_likelihood(self, features) -> tuple[float, float]:
        """(Σ log p(word | the document's topic weights) over every word, number of words)."""
        parts = self._forward(features, lambda net, bow: (
            float(-bow.reconstruction(net.log_word_probs(net.topic_weights(bow))).sum()), bow.words))
        return float(sum(p[0] for p in parts)), float(sum(p[1] for p in parts))

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        return {"topic_weights": self.topic_weights(batch.features).astype(np.float32)}

    def top_word_ids(self, n: int = 10) -> np.ndarray:
        return top_words(self.topics, n)

    def top_words(self, n: int = 10) -> list[list[str]]:
        """The ``n`` words of each topic with the largest decoder weight (word ids as strings without a
        vocabulary)."""
        ids = self.top_word_ids(n).tolist()
        if self.vocabulary is None:
            return [[str(i) for i in row] for row in ids]
        return [[self.vocabulary[i] for i in row] for row in ids]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return dict(self.arrays)

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls(hyperparameters, feature_dim, arrays)

    def save(self, directory: str) -> None:
        save_arrays(directory, self.to_arrays())
        if self.vocabulary is not None:
            write_vocabulary(os.path.join(directory, VOCABULARY_FILE), self.vocabulary)

    @classmethod
    def load(cls, directory: str, manifest: ArtifactManifest) -> NTMModel:
        return cls(manifest.hyperparameters, manifest.feature_dim, load_arrays(directory),
                   saved_vocabulary(directory))


__all__ = ["NTMModel", "build_network"]

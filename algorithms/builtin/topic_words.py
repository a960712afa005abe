"""Words of topics: the vocabulary file, top words, and the quality scores SageMaker's NTM logs (WETC and TU).

- **Vocabulary**: the ``auxiliary`` channel's ``vocab.txt`` (UTF-8, one word per line, in word-id order), as
  SageMaker's NTM reads it; it must hold exactly ``feature_dim`` words.
- **Topic uniqueness** (TU, Nan et al. 2019, as SageMaker's NTM reports it): for the top ``n`` words of each of
  the k topics, ``TU = 1/k Σ_topics 1/n Σ_words 1/cnt(word)``, ``cnt`` being how many topics' top words hold the
  word; 1 when no word is shared, 1/k when all topics are alike.
- **Word-embedding topic coherence** (WETC, Ding et al. 2018): the mean pairwise cosine similarity of the
  embeddings of each topic's top words. SageMaker uses pretrained GloVe vectors; here the embeddings are an
  ``embeddings.txt`` in the auxiliary channel (GloVe's text format: a word and its numbers per line) when one is
  given, else distributional vectors from the training documents themselves: each top word's positive PMI
  with every other top word over document co-occurrence, gathered in one streamed pass restricted to those
  words (a few hundred columns). The same counts give the NPMI coherence (Lau et al. 2014).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from .. import fs as fsutil
from ..training.env import ChannelInput

VOCABULARY_FILE = "vocab.txt"
EMBEDDINGS_FILE = "embeddings.txt"


def _file_named(channel: ChannelInput, name: str) -> str | None:
    for path in channel.files:
        if os.path.basename(path.rstrip("/")) == name:
            return path
    return None


def read_vocabulary(channel: ChannelInput | None, feature_dim: int) -> list[str] | None:
    """The auxiliary channel's vocabulary (None without the channel); fails unless it has ``feature_dim`` words."""
    if channel is None:
        return None
    path = _file_named(channel, VOCABULARY_FILE)
    if path is None:
        others = [os.path.basename(p) for p in channel.files if os.path.basename(p) != EMBEDDINGS_FILE]
        if len(others) != 1:
            raise ValueError(f"the auxiliary channel holds no {VOCABULARY_FILE} (files: {', '.join(others) or 'none'})")
        path = [p for p in channel.files if os.path.basename(p) == others[0]][0]
    fs, inner = fsutil.resolve(path)
    data = fsutil.read_bytes(fs, inner)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"auxiliary channel, {os.path.basename(path)}: not UTF-8 (byte {exc.start})") from None
    words = text.split("\n")
    if words and words[-1] == "":
        words.pop()
    words = [w.rstrip("\r") for w in words]
    if len(words) != feature_dim:
        raise ValueError(f"auxiliary channel, {os.path.basename(path)}: {len(words)} words, but feature_dim is "
                         f"{feature_dim}; it needs one word per line for every word id")
    return words


def write_vocabulary(path: str, words: Sequence[str]) -> None:
    """``words`` as a vocabulary file (one per line); a word may not contain a line break."""
    bad = [w for w in words if "\n" in w or "\r" in w]
    if bad:
        raise ValueError(f"vocabulary word {bad[0]!r} contains a line break")
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(f"{w}\n" for w in words))
    os.replace(tmp, path)


def saved_vocabulary(directory: str) -> list[str] | None:
    """The vocabulary a model artifact keeps beside its arrays (None when it has none)."""
    path = os.path.join(directory, VOCABULARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", newline="\n") as f:
        words = f.read().split("\n")
    return words[:-1] if words and words[-1] == "" else words


def read_embeddings(channel: ChannelInput | None, vocabulary: Sequence[str],
                    wanted: np.ndarray) -> dict[int, np.ndarray]:
    """Vectors of the ``wanted`` word ids from the auxiliary channel's ``embeddings.txt`` (empty without one)."""
    if channel is None:
        return {}
    path = _file_named(channel, EMBEDDINGS_FILE)
    if path is None:
        return {}
    ids = {vocabulary[i]: int(i) for i in wanted}
    found: dict[int, np.ndarray] = {}
    fs, inner = fsutil.resolve(path)
    with fs.open_input_stream(inner) as f:
        for raw in _lines(f):
            word, _, rest = raw.partition(" ")
            if word in ids and ids[word] not in found:
                found[ids[word]] = np.array(rest.split(), dtype=np.float64)
    return found


def _lines(stream) -> Iterable[str]:
    pending = b""
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", errors="replace")


def top_words(scores: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` highest-scoring word ids of each topic (rows of ``scores``), best first (k × n)."""
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def topic_uniqueness(top: np.ndarray) -> np.ndarray:
    """TU of each topic (its mean of 1/cnt over its top words); the model's TU is the mean."""
    words, counts = np.unique(top, return_counts=True)
    cnt = dict(zip(words.tolist(), counts.tolist(), strict=True))
    return np.array([np.mean([1.0 / cnt[w] for w in row]) for row in top.tolist()])


class Cooccurrence:
    """Document frequencies and co-occurrences of a few words (the union of the topics' top words)."""

    def __init__(self, words: np.ndarray):
        self.words = np.asarray(words, dtype=np.int64)
        m = len(self.words)
        self.docs = 0.0
        self.df = np.zeros(m)
        self.co = np.zeros((m, m))

    def update(self, counts: sp.csr_matrix) -> None:
        present = (counts[:, self.words] > 0).astype(np.float64)
        self.docs += counts.shape[0]
        self.df += np.asarray(present.sum(axis=0)).ravel()
        self.co += (present.T @ present).toarray()

    def state(self) -> np.ndarray:
        return np.concatenate([[self.docs], self.df, self.co.ravel()])

    def load(self, state: np.ndarray) -> None:
        m = len(self.words)
        self.docs, self.df, self.co = float(state[0]), state[1:1 + m], state[1 + m:].reshape(m, m)

    def ppmi_vectors(self) -> np.ndarray:
        """Row i: word i's positive PMI with each of the words (itself included: log(N / df))."""
        with np.errstate(divide="ignore", invalid="ignore"):
            pmi = np.log(self.co * self.docs / np.outer(self.df, self.df))
        pmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)
        return pmi

    def npmi(self) -> np.ndarray:
        """Normalized PMI of each pair (−1 when they never co-occur)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            joint = self.co / self.docs
            pmi = np.log(joint / np.outer(self.df / self.docs, self.df / self.docs))
            out = pmi / -np.log(joint)
        out = np.where(self.co > 0, out, -1.0)
        out = np.where(np.isfinite(out), out, 1.0)  # pairs in every document
        return out


def _mean_pairwise(similarity: np.ndarray, members: np.ndarray) -> float:
    sub = similarity[np.ix_(members, members)]
    m = len(members)
    if m < 2:
        return 0.0
    return float((sub.sum() - np.trace(sub)) / (m * (m - 1)))


def coherence(top: np.ndarray, cooccurrence: Cooccurrence,
              embeddings: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per topic: (WETC, NPMI coherence) of its top words. WETC uses ``embeddings`` (word id → vector) for the
    words that have one when given, else the co-occurrence's PPMI vectors."""
    position = {int(w): i for i, w in enumerate(cooccurrence.words)}
    if embeddings:
        ids = sorted(embeddings)
        vectors = np.stack([embeddings[i] for i in ids])
        where = {w: j for j, w in enumerate(ids)}
    else:
        vectors = cooccurrence.ppmi_vectors()
        where = position
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    cosine = unit @ unit.T
    npmi = cooccurrence.npmi()
    wetc, npmis = [], []
    for row in top.tolist():
        members = np.array([where[w] for w in row if w in where], dtype=np.int64)
        wetc.append(_mean_pairwise(cosine, members))
        npmis.append(_mean_pairwise(npmi, np.array([position[w] for w in row], dtype=np.int64)))
    return np.array(wetc), np.array(npmis)


__all__ = ["EMBEDDINGS_FILE", "VOCABULARY_FILE", "Cooccurrence", "coherence", "read_embeddings", "read_vocabulary",
           "saved_vocabulary", "top_words", "topic_uniqueness", "write_vocabulary"]

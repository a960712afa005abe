"""Bag-of-words documents as the topic models (LDA, NTM) read them: checked word counts, empty documents set aside.

A topic model's input is a matrix of word counts, one row per document (``CountVectorizer``'s sparse vectors,
SageMaker's recordIO-protobuf or CSV). Counts must be non-negative integers: a negative or fractional value
is almost always a wrong column (TF-IDF weights, normalized vectors), and training on it would silently give
meaningless topics, so it fails naming the channel, file and record. Documents without words carry no
information about topics; they are dropped and counted rather than failing the job (a vocabulary cut often
empties a few).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..batch import Batch
from ..channel import RECORDIO_PROTOBUF, base_content_type
from ..training.env import ChannelInput


class WordCountError(ValueError):
    """A document's word counts are not non-negative integers."""


@dataclass
class Documents:
    """Rows of word counts (CSR, float64), without the empty documents of the block they came from."""

    counts: sp.csr_matrix
    lengths: np.ndarray  # words per document (float64)
    empty: int  # documents of the block left out because they hold no words

    def __len__(self) -> int:
        """Records of the block, the empty ones included (what progress counts)."""
        return self.counts.shape[0] + self.empty


def check_counts(features, place: str = "row", first_row: int = 0) -> None:
    """Fail on the first value that is not a non-negative integer count, naming its row (``place`` ``first_row +
    i``, e.g. "train channel, part-00001.pbr record 17") and word index."""
    if sp.issparse(features):
        csr = sp.csr_matrix(features)
        values = csr.data
    else:
        values = np.asarray(features).reshape(-1)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values))
    if not bad.any():
        return
    at = int(np.flatnonzero(bad)[0])
    if sp.issparse(features):
        row = int(np.searchsorted(csr.indptr, at, side="right") - 1)
        word = int(csr.indices[at])
    else:
        width = np.asarray(features).shape[1]
        row, word = divmod(at, width)
    value = values[at]
    raise WordCountError(f"{place} {first_row + row}: word {word} has count {value:g}; topic models need "
                         "non-negative integer word counts (CountVectorizer's output, not TF-IDF or normalized "
                         "vectors)")


def documents(features, place: str = "row", first_row: int = 0) -> Documents:
    """Checked counts as CSR float64 with the empty documents removed."""
    check_counts(features, place, first_row)
    counts = sp.csr_matrix(features, dtype=np.float64)
    counts.sum_duplicates()
    lengths = np.asarray(counts.sum(axis=1)).ravel()
    keep = lengths > 0
    empty = int(len(lengths) - keep.sum())
    if empty:
        counts, lengths = counts[keep], lengths[keep]
    return Documents(counts, lengths, empty)


def iter_documents(channel: ChannelInput, max_rows: int, name: str | None = None) -> Iterator[Documents]:
    """This worker's documents of ``channel`` in blocks of at most ``max_rows``, checked and without empties; an
    error names the file and the record's index in it."""
    label = name or channel.name
    for path, first, batch in _located_batches(channel, max_rows):
        yield documents(batch.features, f"{label} channel, {os.path.basename(path)} record", first)


def _located_batches(channel: ChannelInput, max_rows: int) -> Iterator[tuple[str, int, Batch]]:
    """(file, index in the file of the batch's first record, batch), file by file."""
    recordio = base_content_type(channel.content_type) == RECORDIO_PROTOBUF
    for path in channel.files:
        if recordio:
            from ..reader import iter_file_batches

            batches = iter_file_batches(path, max_rows, feature_dim=channel.feature_dim)
        else:
            from ..reader import rebatch
            from ..text_formats import iter_text_file_batches

            batches = rebatch(iter_text_file_batches(path, channel.content_type, channel.feature_dim), max_rows)
        first = 0
        for batch in batches:
            yield path, first, batch
            first += len(batch)


__all__ = ["Documents", "WordCountError", "check_counts", "documents", "iter_documents"]

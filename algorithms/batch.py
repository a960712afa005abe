"""The in-memory unit that codecs produce and algorithms consume: many rows of features and labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

Features = np.ndarray | sp.csr_matrix


@dataclass
class Batch:
    """Rows of features (dense ``(n, d)`` array or CSR matrix) with optional labels.

    ``labels`` is ``(n,)`` when every record carries a scalar label and ``(n, k)`` for vector labels.
    ``weights`` (per-row instance weights) and ``qid`` (query/group ids, for ranking) come from formats
    that carry them (libsvm ``label:weight`` and ``qid:N``, CSV weight columns).
    """

    features: Features
    labels: np.ndarray | None = None
    weights: np.ndarray | None = None
    qid: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        for name in ("labels", "weights", "qid"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"{n} feature rows but {len(values)} {name}")

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def num_rows(self) -> int:
        return self.features.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.features)

    def dense(self, dtype=None) -> np.ndarray:
        x = self.features.toarray() if self.is_sparse else self.features
        return x if dtype is None else np.asarray(x, dtype=dtype)

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop``: views of dense arrays; CSR rows without scipy's per-slice overhead."""

        def part(values):
            return None if values is None else values[start:stop]

        return Batch(_rows(self.features, start, stop), part(self.labels), part(self.weights), part(self.qid))

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        if not batches:
            raise ValueError("no batches to concatenate")
        if len(batches) == 1:
            return batches[0]
        if any(b.is_sparse for b in batches):
            features = sp.vstack([sp.csr_matrix(b.features) for b in batches], format="csr")
        else:
            features = np.concatenate([b.features for b in batches])
        return Batch(features, *(_concat_optional(batches, name) for name in ("labels", "weights", "qid")))


def _concat_optional(batches: list[Batch], name: str) -> np.ndarray | None:
    parts = [getattr(b, name) for b in batches]
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise ValueError(f"some batches have {name} and some do not")
    return np.concatenate(parts)


def _rows(x: Features, start: int, stop: int) -> Features:
    """``x[start:stop]``; CSR rows are cut from its arrays directly (scipy's row slicing costs ~4x more;
    scipy still copies the entries of a slice that is a small part of ``x``)."""
    if not (sp.issparse(x) and x.format == "csr"):
        return x[start:stop]
    start, stop, _ = slice(start, stop).indices(x.shape[0])
    stop = max(start, stop)
    lo, hi = x.indptr[start], x.indptr[stop]
    return type(x)((x.data[lo:hi], x.indices[lo:hi], x.indptr[start : stop + 1] - lo),
                   shape=(stop - start, x.shape[1]))

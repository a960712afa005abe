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
    """

    features: Features
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != self.features.shape[0]:
            raise ValueError(f"{self.features.shape[0]} feature rows but {len(self.labels)} labels")

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
        labels = None if self.labels is None else self.labels[start:stop]
        return Batch(_rows(self.features, start, stop), labels)

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
        has = [b.labels is not None for b in batches]
        if any(has) and not all(has):
            raise ValueError("some batches have labels and some do not")
        labels = np.concatenate([b.labels for b in batches]) if all(has) else None
        return Batch(features, labels)


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

"""Batch row slicing and concatenation, against numpy's and scipy's own."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from algorithms.batch import Batch


@pytest.mark.parametrize("kind", [sp.csr_matrix, sp.csr_array])
@pytest.mark.parametrize("start, stop", [(0, 10), (3, 7), (0, 0), (9, 10), (5, 3), (-4, -1), (2, 99), (-99, 4)])
def test_csr_slices_equal_scipy_slices(kind, start, stop):
    rng = np.random.default_rng(0)
    x = kind(sp.random(10, 30, density=0.2, format="csr", dtype=np.float32, random_state=1))
    y = rng.normal(size=10)
    got = Batch(x, y).slice(start, stop)
    want = x[start:stop]
    assert type(got.features) is kind and got.features.shape == want.shape
    np.testing.assert_array_equal(got.features.indptr, want.indptr)
    np.testing.assert_array_equal(got.features.indices, want.indices)
    np.testing.assert_array_equal(got.features.data, want.data)
    np.testing.assert_array_equal(got.labels, y[start:stop])


def test_dense_slices_are_views():
    x = np.arange(20.0).reshape(10, 2)
    got = Batch(x, x[:, 0]).slice(2, 5)
    np.testing.assert_array_equal(got.features, x[2:5])
    assert np.shares_memory(got.features, x) and np.shares_memory(got.labels, x)


def test_concat_of_slices_gives_back_the_batch():
    x = sp.random(50, 8, density=0.3, format="csr", random_state=2)
    b = Batch(x, np.arange(50.0))
    parts = [b.slice(lo, lo + 7) for lo in range(0, 50, 7)]
    got = Batch.concat(parts)
    assert (got.features != x).nnz == 0
    np.testing.assert_array_equal(got.labels, b.labels)

"""The faiss index of k-NN: built from the sampled vectors (on the worker's GPU when it has one and faiss can use
it), searched with a guaranteed ``k`` results, saved in faiss's own serialized format (never pickled).

The index types are SageMaker's: ``faiss.Flat`` (exact), ``faiss.IVFFlat`` (inverted lists over a k-means coarse
quantizer) and ``faiss.IVFPQ`` (inverted lists of product-quantized codes). ``INNER_PRODUCT`` and ``COSINE`` use
inner-product indexes; ``COSINE`` normalizes the vectors (the model normalizes queries likewise).

faiss is imported on first use (:func:`load_faiss`): it is the ``knn`` extra (``faiss-cpu``), and a GPU cluster
installs a faiss GPU build instead; the other built-ins never need it.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy as np

from ...backend import ENV as BACKEND_ENV
from ...backend import BackendUnavailable
from . import params

INSTALL_HINT = "pip install 'spark-ml[knn]' (faiss-cpu), or a faiss GPU build"


@functools.cache
def load_faiss() -> ModuleType:
    """The faiss module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(f"k-NN needs faiss: {INSTALL_HINT} ({exc})") from None
    return faiss


def new_index(hp: dict, dim: int, rows: int) -> Any:
    """An empty (untrained, for IVF) CPU index for ``rows`` vectors of ``dim`` dimensions."""
    faiss = load_faiss()
    metric = faiss.METRIC_L2 if hp["index_metric"] == "L2" else faiss.METRIC_INNER_PRODUCT
    kind = hp["index_type"]
    if kind == "faiss.Flat":
        return faiss.IndexFlat(dim, metric)
    lists = params.nlists(hp, rows)
    quantizer = faiss.IndexFlat(dim, metric)
    if kind == "faiss.IVFFlat":
        index = faiss.IndexIVFFlat(quantizer, dim, lists, metric)
    else:
        m = params.pq_m(hp, dim)
        bits = max(1, min(params.PQ_BITS, int(np.log2(max(rows, 2)))))  # a sub-quantizer trains on >= 2**bits rows
        index = faiss.IndexIVFPQ(quantizer, dim, lists, m, bits)
    index.own_fields = True  # the quantizer lives as long as the index
    quantizer.this.disown()
    # small samples train fine on fewer points than faiss's rule of thumb; do not print its warning
    index.cp.min_points_per_centroid = 1
    if kind == "faiss.IVFPQ":
        index.pq.cp.min_points_per_centroid = 1
    index.nprobe = params.nprobe(hp, lists)
    return index


def build(hp: dict, vectors: np.ndarray, device: str = "cpu") -> Any:
    """The trained index holding ``vectors`` (float32, already reduced, normalized or padded as the model does).

    On a GPU worker (``device == "cuda"``) the index is trained and filled on GPU 0 of the worker (its task's
    GPU) and copied back to the CPU for saving; without a faiss GPU build that fails, unless
    ``SPARK_ML_ARRAY_BACKEND=numpy`` asks for the CPU explicitly (the array backend's rule)."""
    faiss = load_faiss()
    vectors = np.ascontiguousarray(vectors, np.float32)
    index = new_index(hp, vectors.shape[1], len(vectors))
    if device == "cuda" and os.environ.get(BACKEND_ENV, "").strip().lower() != "numpy":
        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
            raise BackendUnavailable(f"this worker was given a GPU but faiss cannot use it (faiss {faiss.__version__} "
                                     f"has no GPU support here); install a faiss GPU build, or set {BACKEND_ENV}=numpy "
                                     "to build the index on the CPU")
        resources = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(resources, 0, index)
        if not gpu.is_trained:
            gpu.train(vectors)
        gpu.add(vectors)
        return faiss.index_gpu_to_cpu(gpu)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and ids ``(n, k)`` of each query's ``k`` nearest vectors, closest first. An IVF search that finds
    fewer than ``k`` vectors in the lists it probed (id -1) is repeated for those queries with twice the lists,
    until it finds ``k`` (the index holds at least ``k`` vectors)."""
    queries = np.ascontiguousarray(queries, np.float32)
    distances, ids = index.search(queries, k)
    short = np.flatnonzero((ids < 0).any(axis=1))
    if len(short) and hasattr(index, "nprobe"):
        ivf = load_faiss().extract_index_ivf(index)
        original = ivf.nprobe
        try:
            while len(short) and ivf.nprobe < ivf.nlist:
                ivf.nprobe = min(ivf.nlist, 2 * ivf.nprobe)
                d, i = index.search(queries[short], k)
                distances[short], ids[short] = d, i
                short = short[(i < 0).any(axis=1)]
        finally:
            ivf.nprobe = original
    return distances, ids


def to_bytes(index: Any) -> np.ndarray:
    """faiss's serialized form of the index, as a uint8 array."""
    return load_faiss().serialize_index(index)


def from_bytes(data: np.ndarray) -> Any:
    return load_faiss().deserialize_index(np.ascontiguousarray(data, np.uint8))


def describe(index: Any) -> str:
    return f"{type(index).__name__}(d={index.d}, ntotal={index.ntotal})"


__all__ = ["INSTALL_HINT", "build", "describe", "from_bytes", "load_faiss", "new_index", "search", "to_bytes"]

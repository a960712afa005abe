"""k-NN's hyperparameters (SageMaker's names, defaults and ranges) and SageMaker's cross-checks between them."""

from __future__ import annotations

import math
from typing import Any

from ...hyperparameters import AUTO, Hyperparameter, HyperparameterError, HyperparameterSpec

PREDICTOR_TYPES = ("classifier", "regressor")
REDUCTIONS = ("none", "sign", "fjlt")
INDEX_TYPES = ("faiss.Flat", "faiss.IVFFlat", "faiss.IVFPQ")
METRICS = ("L2", "INNER_PRODUCT", "COSINE")
PQ_M_VALUES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
PQ_BITS = 8  # bits per sub-quantizer code (fewer when the sample is smaller than 2**8 rows)

HYPERPARAMETERS = HyperparameterSpec([
    Hyperparameter("feature_dim", int, low=1,
                   doc="Number of features; required unless the train channel's manifest records it."),
    Hyperparameter("k", int, required=True, low=1, doc="Number of nearest neighbours a prediction looks at."),
    Hyperparameter("predictor_type", str, required=True, choices=PREDICTOR_TYPES,
                   doc="classifier: the neighbours' majority label; regressor: their mean label."),
    Hyperparameter("sample_size", int, required=True, low=1,
                   doc="Training records the index holds: a uniform sample of the train channel drawn across the "
                       "workers (all of the records when there are fewer)."),
    Hyperparameter("dimension_reduction_type", str, default="none", choices=REDUCTIONS,
                   doc="Random projection before indexing: sign (random ±1 matrix) or fjlt (fast "
                       "Johnson-Lindenstrauss transform); none keeps the features."),
    Hyperparameter("dimension_reduction_target", int, low=1,
                   doc="Dimensions after the reduction; required with a reduction, below feature_dim."),
    Hyperparameter("index_type", str, default="faiss.Flat", choices=INDEX_TYPES,
                   doc="faiss.Flat: exact search; faiss.IVFFlat / faiss.IVFPQ: inverted lists (approximate, "
                       "faster), IVFPQ also compresses the vectors by product quantization."),
    Hyperparameter("index_metric", str, default="L2", choices=METRICS,
                   doc="L2 (distances are squared Euclidean), INNER_PRODUCT or COSINE (similarities, largest "
                       "first); IVFPQ takes L2 only."),
    Hyperparameter("faiss_index_ivf_nlists", int, default=AUTO, low=1, auto=True,
                   doc="IVF indexes: number of inverted lists; auto: the square root of the sample size."),
    Hyperparameter("faiss_index_pq_m", int, default=AUTO, low=1, auto=True,
                   doc="IVFPQ: sub-quantizers per vector, one of " + ", ".join(map(str, PQ_M_VALUES)) + "; the "
                       "vectors are zero-padded when it does not divide their dimension. auto: the largest of "
                       "those that divides the dimension and leaves at least 2 dimensions per sub-quantizer."),
    Hyperparameter("faiss_index_nprobe", int, default=AUTO, low=1, auto=True,
                   doc="IVF indexes: inverted lists searched per query (a spark_ml addition; SageMaker does not "
                       "expose it). auto: max(8, nlists / 128). More lists, higher recall, slower search."),
    Hyperparameter("mini_batch_size", int, default=5000, low=1,
                   doc="Records per streamed batch (sampling and test scoring); the results do not depend on it."),
])


def check(values: dict[str, Any]) -> dict[str, Any]:
    """SageMaker's cross-checks; raises HyperparameterError naming the hyperparameter at fault."""
    reduction, target = values["dimension_reduction_type"], values.get("dimension_reduction_target")
    feature_dim = values.get("feature_dim")
    if reduction != "none":
        if target is None:
            raise HyperparameterError("dimension_reduction_target",
                                      f"is required with dimension_reduction_type={reduction}")
        if feature_dim not in (None, AUTO) and target >= int(feature_dim):
            raise HyperparameterError("dimension_reduction_target",
                                      f"must be below feature_dim ({feature_dim}), got {target}")
    elif target is not None:
        raise HyperparameterError("dimension_reduction_target",
                                  "is set but dimension_reduction_type is none; set a type (sign or fjlt)")
    if values["index_type"] == "faiss.IVFPQ" and values["index_metric"] != "L2":
        raise HyperparameterError("index_metric", f"faiss.IVFPQ supports L2 only, got {values['index_metric']}")
    pq_m = values.get("faiss_index_pq_m")
    if pq_m not in (None, AUTO) and int(pq_m) not in PQ_M_VALUES:
        raise HyperparameterError("faiss_index_pq_m",
                                  f"must be one of {', '.join(map(str, PQ_M_VALUES))} or auto, got {pq_m}")
    if values["k"] > values["sample_size"]:
        raise HyperparameterError("k", f"must be at most sample_size ({values['sample_size']}), got {values['k']}")
    nlists = values.get("faiss_index_ivf_nlists")
    if nlists not in (None, AUTO) and int(nlists) > values["sample_size"]:
        raise HyperparameterError("faiss_index_ivf_nlists",
                                  f"must be at most sample_size ({values['sample_size']}), got {nlists}")
    return values


def index_dim(hp: dict[str, Any], feature_dim: int) -> int:
    """Dimensions of the vectors the index holds, before any padding for product quantization."""
    return int(hp["dimension_reduction_target"]) if hp["dimension_reduction_type"] != "none" else feature_dim


def pq_m(hp: dict[str, Any], dim: int) -> int:
    """Sub-quantizers of an IVFPQ index over ``dim``-dimensional vectors."""
    value = hp.get("faiss_index_pq_m")
    if value not in (None, AUTO):
        return int(value)
    fitting = [m for m in PQ_M_VALUES if dim % m == 0 and dim // m >= 2]
    return max(fitting) if fitting else 1


def padded_dim(dim: int, m: int) -> int:
    """``dim`` rounded up to a multiple of ``m`` (zero-padding leaves L2 distances as they are)."""
    return -(-dim // m) * m


def nlists(hp: dict[str, Any], rows: int) -> int:
    value = hp.get("faiss_index_ivf_nlists")
    wanted = max(1, round(math.sqrt(hp["sample_size"]))) if value in (None, AUTO) else int(value)
    return max(1, min(wanted, rows))


def nprobe(hp: dict[str, Any], lists: int) -> int:
    value = hp.get("faiss_index_nprobe")
    wanted = max(8, math.ceil(lists / 128)) if value in (None, AUTO) else int(value)
    return max(1, min(wanted, lists))


__all__ = ["HYPERPARAMETERS", "INDEX_TYPES", "METRICS", "PQ_BITS", "PQ_M_VALUES", "PREDICTOR_TYPES", "REDUCTIONS",
           "check", "index_dim", "nlists", "nprobe", "padded_dim", "pq_m"]

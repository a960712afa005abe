"""Scoring a DataFrame in the executors with a built-in model, vectorized over Arrow batches.

The artifact's files travel with the task (no shared filesystem needed) and are loaded once per Python
worker process. Each Arrow batch is one ``predict`` call; SageMaker's output keys become columns:
scalars as doubles, vectors as ``VectorUDT``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import uuid
from collections import OrderedDict

import numpy as np
import pyarrow as pa
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StructField, StructType

from algorithms.artifact import fetch

from ..arrow_vectors import ColumnError, matrix_to_arrow, vectors_from_arrow

_cache: OrderedDict[str, object] = OrderedDict()  # the models this worker process scored with last
_CACHED_MODELS = 4  # a Pipeline's few models, alternating task by task, stay loaded; memory stays bounded
_lock = threading.Lock()


def artifact_files(location: str) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="spark-ml-artifact-") as held:  # a remote artifact lands here
        local, manifest = fetch(location, into=held)
        files = {"manifest.json": open(os.path.join(local, "manifest.json"), "rb").read()}  # noqa: SIM115
        for name in manifest.files:
            with open(os.path.join(local, *name.split("/")), "rb") as f:
                files[name] = f.read()
    return files


def _load(files: dict[str, bytes], key: str):
    with _lock:
        model = _cache.get(key)
        if model is None:
            from algorithms.builtin import load_model

            with tempfile.TemporaryDirectory(prefix="spark-ml-scoring-") as folder:  # models load into memory
                for name, data in files.items():
                    path = os.path.join(folder, *name.split("/"))
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(data)
                model = load_model(folder)
            _cache[key] = model
            while len(_cache) > _CACHED_MODELS:
                _cache.popitem(last=False)
        _cache.move_to_end(key)
        return model


def output_fields(model) -> list[StructField]:
    return [StructField(o.name, VectorUDT() if o.kind == "vector" else DoubleType(), True) for o in model.outputs]


DENSE_PROJECTION_MAX_DIM = 4096  # up to this many features, vectors cross to Python as array<float>


def score_dataframe(df: DataFrame, location: str, features_col: str, model, options: dict | None = None) -> DataFrame:
    """``df`` plus the model's output columns. ``options`` (JSON-able) go to the executor-side model's
    ``configured(**options)``; ``model`` is the driver's model, already configured the same way.

    Only the features column crosses into Python (an Arrow UDF), never the other columns, and vectors with up to
    ``DENSE_PROJECTION_MAX_DIM`` features are turned into ``array<float>`` inside the JVM first: Spark's
    conversion of ``VectorUDT`` to Arrow costs about 4x more than the whole scoring otherwise.
    """
    if features_col not in df.columns:
        raise ColumnError(f"featuresCol {features_col!r} is not a column (columns: {', '.join(df.columns)})")
    clash = [o.name for o in model.outputs if o.name in df.columns]
    if clash:
        raise ColumnError(f"the input already has column(s) {', '.join(clash)}, which scoring adds; rename them")
    files = artifact_files(location)
    key = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()
    score = _scorer(files, key, options, [(o.name, o.kind) for o in model.outputs], model.feature_dim, features_col)
    features = F.col(features_col)
    if type(df.schema[features_col].dataType).__name__ == "VectorUDT" and model.feature_dim <= DENSE_PROJECTION_MAX_DIM:
        # null vectors stay null (vector_to_array itself fails on them, without naming the row)
        features = F.when(features.isNull(), F.lit(None)).otherwise(vector_to_array(features, "float32"))
    if not hasattr(F, "arrow_udf"):  # pyspark 4.0: a map over whole batches instead
        return _score_with_map(df, score, features_col, model)
    result_type = StructType(output_fields(model))
    column = f"__spark_ml_scores_{uuid.uuid4().hex[:8]}"
    udf = F.arrow_udf(lambda col: _as_struct(score(col), result_type), result_type)
    scored = df.withColumn(column, udf(features))
    return scored.select(*[F.col(c) for c in df.columns], *[F.col(f"{column}.{o.name}") for o in model.outputs])


def _scorer(files, key, options, outputs, feature_dim, features_col):
    """features (an Arrow column) → {output name: Arrow array}, run in the executors."""

    def score(column) -> dict[str, pa.Array]:
        from algorithms.batch import Batch

        scorer = _load(files, key)
        if options:
            scorer = scorer.configured(**options)
        vectors = vectors_from_arrow(column, features_col, np.float32)
        if vectors.dim != feature_dim and len(column):
            raise ColumnError(f"featuresCol {features_col!r}: the model expects {feature_dim} features, "
                              f"got vectors of size {vectors.dim}")
        predictions = scorer.predict(Batch(vectors.matrix)) if len(column) else {}
        out = {}
        for name, kind in outputs:
            values = np.asarray(predictions.get(name, np.zeros(0)), dtype=np.float64)
            if kind == "vector":
                out[name] = matrix_to_arrow(values.reshape(len(column), -1))
            else:
                out[name] = pa.array(values.reshape(-1))
        return out

    return score


def _as_struct(columns: dict[str, pa.Array], result_type: StructType) -> pa.StructArray:
    names = [f.name for f in result_type.fields]
    return pa.StructArray.from_arrays([columns[n] for n in names], names=names)


def _score_with_map(df: DataFrame, score, features_col: str, model) -> DataFrame:
    schema = StructType(list(df.schema.fields) + output_fields(model))
    names = [o.name for o in model.outputs]

    def run(batches):
        for batch in batches:
            if batch.num_rows == 0:
                continue
            scored = score(batch.column(features_col))
            columns = list(batch.columns) + [scored[n] for n in names]
            fields = list(batch.schema) + [pa.field(n, scored[n].type) for n in names]
            yield pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))

    return df.mapInArrow(run, schema)

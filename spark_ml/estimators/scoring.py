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

import numpy as np
import pyarrow as pa
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import DataFrame
from pyspark.sql.types import DoubleType, StructField, StructType

from algorithms.artifact import fetch

from ..arrow_vectors import ColumnError, matrix_to_arrow, vectors_from_arrow

_cache: dict[str, object] = {}
_lock = threading.Lock()


def artifact_files(location: str) -> dict[str, bytes]:
    local, manifest = fetch(location)
    files = {"manifest.json": open(os.path.join(local, "manifest.json"), "rb").read()}  # noqa: SIM115
    for name in manifest.files:
        with open(os.path.join(local, *name.split("/")), "rb") as f:
            files[name] = f.read()
    return files


def _load(files: dict[str, bytes], key: str):
    with _lock:
        model = _cache.get(key)
        if model is None:
            from algorithms.models import load_model

            folder = tempfile.mkdtemp(prefix="spark-ml-scoring-")
            for name, data in files.items():
                path = os.path.join(folder, *name.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
            model = load_model(folder)
            _cache.clear()  # one model per worker process at a time keeps memory bounded
            _cache[key] = model
        return model


def output_fields(model) -> list[StructField]:
    return [StructField(o.name, VectorUDT() if o.kind == "vector" else DoubleType(), True) for o in model.outputs]


def score_dataframe(df: DataFrame, location: str, features_col: str, model, options: dict | None = None) -> DataFrame:
    """``df`` plus the model's output columns. ``options`` (JSON-able) go to the executor-side model's
    ``configured(**options)``; ``model`` is the driver's model, already configured the same way."""
    if features_col not in df.columns:
        raise ColumnError(f"featuresCol {features_col!r} is not a column (columns: {', '.join(df.columns)})")
    clash = [o.name for o in model.outputs if o.name in df.columns]
    if clash:
        raise ColumnError(f"the input already has column(s) {', '.join(clash)}, which scoring adds; rename them")
    files = artifact_files(location)
    key = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()
    schema = StructType(list(df.schema.fields) + output_fields(model))
    outputs = [(o.name, o.kind) for o in model.outputs]
    feature_dim = model.feature_dim

    def score(batches):
        from algorithms.batch import Batch

        scorer = _load(files, key)
        if options:
            scorer = scorer.configured(**options)
        row = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            vectors = vectors_from_arrow(batch.column(features_col), features_col, np.float32, row)
            if vectors.dim != feature_dim:
                raise ColumnError(f"featuresCol {features_col!r}: the model expects {feature_dim} features, "
                                  f"got vectors of size {vectors.dim}")
            predictions = scorer.predict(Batch(vectors.matrix))
            columns = list(batch.columns)
            for name, kind in outputs:
                values = np.asarray(predictions[name])
                if kind == "vector":
                    columns.append(matrix_to_arrow(values.reshape(len(values), -1).astype(np.float64)))
                else:
                    columns.append(pa.array(values.reshape(-1).astype(np.float64)))
            row += batch.num_rows
            yield pa.RecordBatch.from_arrays(columns, schema=_arrow_schema(batch.schema, outputs, columns))

    return df.mapInArrow(score, schema)


def _arrow_schema(input_schema: pa.Schema, outputs, columns) -> pa.Schema:
    fields = list(input_schema)
    for (name, _), column in zip(outputs, columns[len(fields):], strict=True):
        fields.append(pa.field(name, column.type))
    return pa.schema(fields)

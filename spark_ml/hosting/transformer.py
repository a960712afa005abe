"""``EndpointModel``: a Spark ML Transformer that scores a DataFrame through an inference endpoint.

Per partition (``mapInArrow``, so it runs under Spark Connect too): each Arrow batch's feature
column is encoded once, cut into requests of at most ``maxBatchRows`` rows and ``maxBatchBytes``
bytes, sent with at most ``concurrency`` requests in flight, retried with exponential backoff on
5xx / 429 / connection errors, and joined back to its rows in order. Output columns carry SageMaker's
names (``score``, ``predicted_label``, ``closest_cluster``, ``projection``, …; scalars as double,
vectors as ML vectors); with A/B variants serving different algorithms the columns are the union and a
row's other columns are null. ``errorPolicy="fail"`` fails the job on a non-retryable error;
``"column"`` puts the error in ``errorCol`` (a 4xx batch is bisected so only bad rows are marked).
"""

from __future__ import annotations

import functools
import json
import random
import time
import uuid
import warnings
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from .serializers import RequestSerializer, ResponseDeserializer, deserializer, serializer

DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # sagemaker-spark's batch limit, under the endpoint's 6 MiB
RETRYABLE = (429, 500, 502, 503, 504)
# Answers the rows themselves can cause (unparsable row, body too large): worth splitting the batch to find
# the rows at fault. Others (auth, 404, 429 after retries) would fail every half the same way.
ROW_FAULT_STATUSES = (400, 413)


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str = "scalar"  # "scalar" | "vector"


def outputs_from_metadata(metadata: dict[str, dict], variant: str | None = None) -> list[OutputSpec]:
    """Union of the variants' outputs (in first-seen order); a variant whose metadata failed is an error."""
    specs: dict[str, OutputSpec] = {}
    for name, meta in metadata.items():
        if variant and name != variant:
            continue
        if "error" in meta:
            raise RuntimeError(
                f"cannot read variant {name}'s outputs: {meta['error']}; set outputs= explicitly"
            )
        for o in meta["outputs"]:
            spec = OutputSpec(o["name"], o.get("kind", "scalar"))
            if specs.setdefault(spec.name, spec).kind != spec.kind:
                raise RuntimeError(f"output {spec.name} is a scalar in one variant and a vector in another")
    if not specs:
        raise RuntimeError(f"no variant{' ' + variant if variant else ''} reported outputs")
    return list(specs.values())


class EndpointModel(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Scores a DataFrame's feature vectors through an endpoint (registry name or URL)."""

    endpoint = Param(
        Params._dummy(), "endpoint", "endpoint name (in the registry) or base URL", TypeConverters.toString
    )
    featuresCol = Param(
        Params._dummy(),
        "featuresCol",
        "features column (ML vector or array of numbers)",
        TypeConverters.toString,
    )
    serializer = Param(
        Params._dummy(),
        "serializer",
        "request format: protobuf, csv, json, jsonlines, libsvm, or a registered name",
        TypeConverters.toString,
    )
    deserializer = Param(
        Params._dummy(),
        "deserializer",
        "response format: protobuf, json, jsonlines, or a registered name",
        TypeConverters.toString,
    )
    outputs = Param(
        Params._dummy(),
        "outputs",
        'JSON list of {"name", "kind"}; empty: ask the endpoint',
        TypeConverters.toString,
    )
    maxBatchRows = Param(Params._dummy(), "maxBatchRows", "most rows per request", TypeConverters.toInt)
    maxBatchBytes = Param(
        Params._dummy(), "maxBatchBytes", "most bytes per request body", TypeConverters.toInt
    )
    concurrency = Param(
        Params._dummy(), "concurrency", "requests in flight per partition", TypeConverters.toInt
    )
    maxRetries = Param(
        Params._dummy(),
        "maxRetries",
        "retries of a request on 5xx/429/connection errors",
        TypeConverters.toInt,
    )
    retryBackoff = Param(
        Params._dummy(),
        "retryBackoff",
        "first retry delay in seconds (doubles, with jitter)",
        TypeConverters.toFloat,
    )
    requestTimeout = Param(Params._dummy(), "requestTimeout", "seconds per request", TypeConverters.toFloat)
    errorPolicy = Param(
        Params._dummy(),
        "errorPolicy",
        "fail (the job) or column (errors in errorCol)",
        TypeConverters.toString,
    )
    errorCol = Param(
        Params._dummy(), "errorCol", "error column for errorPolicy=column", TypeConverters.toString
    )
    variantCol = Param(
        Params._dummy(),
        "variantCol",
        "column naming the variant that answered; empty: none",
        TypeConverters.toString,
    )
    targetVariant = Param(
        Params._dummy(),
        "targetVariant",
        "send every request to this variant; empty: weights",
        TypeConverters.toString,
    )

    @keyword_only
    def __init__(
        self,
        *,
        endpoint: str | None = None,
        featuresCol: str = "features",
        serializer: str | RequestSerializer = "protobuf",
        deserializer: str | ResponseDeserializer = "protobuf",
        outputs: str | list | None = None,
        maxBatchRows: int = 10_000,
        maxBatchBytes: int = DEFAULT_MAX_BYTES,
        concurrency: int = 4,
        maxRetries: int = 5,
        retryBackoff: float = 0.1,
        requestTimeout: float = 60.0,
        errorPolicy: str = "fail",
        errorCol: str = "error",
        variantCol: str = "",
        targetVariant: str = "",
        authToken: str | None = None,
    ):
        super().__init__()
        self._setDefault(
            featuresCol="features",
            serializer="protobuf",
            deserializer="protobuf",
            outputs="",
            maxBatchRows=10_000,
            maxBatchBytes=DEFAULT_MAX_BYTES,
            concurrency=4,
            maxRetries=5,
            retryBackoff=0.1,
            requestTimeout=60.0,
            errorPolicy="fail",
            errorCol="error",
            variantCol="",
            targetVariant="",
        )
        self._serializer_obj: RequestSerializer | None = None
        self._deserializer_obj: ResponseDeserializer | None = None
        self._auth_token = authToken
        self._before_transform = None
        kwargs = dict(self._input_kwargs)
        kwargs.pop("authToken", None)
        self.setParams(**kwargs)

    @keyword_only
    def setParams(self, **kwargs):
        if isinstance(kwargs.get("serializer"), RequestSerializer):
            self._serializer_obj = kwargs.pop("serializer")
            kwargs["serializer"] = type(self._serializer_obj).__name__
        if isinstance(kwargs.get("deserializer"), ResponseDeserializer):
            self._deserializer_obj = kwargs.pop("deserializer")
            kwargs["deserializer"] = type(self._deserializer_obj).__name__
        if isinstance(kwargs.get("outputs"), list):
            kwargs["outputs"] = json.dumps(
                [
                    {"name": o.name, "kind": o.kind} if isinstance(o, OutputSpec) else o
                    for o in kwargs["outputs"]
                ]
            )
        if kwargs.get("outputs") is None:
            kwargs.pop("outputs", None)
        if "errorPolicy" in kwargs and kwargs["errorPolicy"] not in ("fail", "column"):
            raise ValueError(f"errorPolicy must be 'fail' or 'column', got {kwargs['errorPolicy']!r}")
        for name in ("maxBatchRows", "maxBatchBytes", "concurrency"):
            if name in kwargs and int(kwargs[name]) < 1:
                raise ValueError(f"{name} must be >= 1, got {kwargs[name]}")
        return self._set(**kwargs)

    def setAuthToken(self, token: str | None) -> EndpointModel:
        """Bearer token for the endpoint (kept out of Params so a saved Pipeline does not hold it)."""
        self._auth_token = token
        return self

    def setBeforeTransform(self, hook) -> EndpointModel:
        """A callable run once on the driver before the first transform (CREATE_ON_TRANSFORM uses it)."""
        self._before_transform = hook
        return self

    def copy(self, extra=None):
        that = super().copy(extra)
        that._serializer_obj, that._deserializer_obj = self._serializer_obj, self._deserializer_obj
        that._auth_token, that._before_transform = self._auth_token, self._before_transform
        return that

    # --------------------------------------------------------------------------------------------
    def _resolve_outputs(self, metadata) -> list[OutputSpec]:
        given = self.getOrDefault(self.outputs)
        if given:
            return [OutputSpec(o["name"], o.get("kind", "scalar")) for o in json.loads(given)]
        return outputs_from_metadata(metadata(), self.getOrDefault(self.targetVariant) or None)

    def _transform(self, dataset):
        if self._before_transform is not None:
            hook, self._before_transform = self._before_transform, None
            hook()
        if not self.isDefined(self.endpoint):
            raise ValueError("EndpointModel needs endpoint= (a registry name or a URL)")
        from ..endpoints.client import endpoint_metadata, resolve

        target = resolve(self.getOrDefault(self.endpoint), self._auth_token)
        metadata = functools.cache(lambda: endpoint_metadata(target))  # asked once, when needed at all
        outputs = self._resolve_outputs(metadata)
        features = self.getOrDefault(self.featuresCol)
        if features not in dataset.columns:
            raise ValueError(f"no column {features!r} in the DataFrame (columns: {dataset.columns})")
        fields = list(dataset.schema.fields)
        extra = [StructField(o.name, VectorUDT() if o.kind == "vector" else DoubleType()) for o in outputs]
        variant_col = self.getOrDefault(self.variantCol)
        policy = self.getOrDefault(self.errorPolicy)
        if variant_col:
            extra.append(StructField(variant_col, StringType()))
        if policy == "column":
            extra.append(StructField(self.getOrDefault(self.errorCol), StringType()))
        clash = sorted({f.name for f in extra} & set(dataset.columns))
        if clash:
            raise ValueError(
                f"the DataFrame already has column(s) {clash}; rename them or choose other names"
            )
        plan = ScoringPlan(
            url=target.url,
            token=target.token,
            features_index=dataset.columns.index(features),
            features_col=features,
            serializer=self._serializer_obj or serializer(self.getOrDefault(self.serializer)),
            deserializer=self._deserializer_obj or deserializer(self.getOrDefault(self.deserializer)),
            outputs=outputs,
            max_rows=self.getOrDefault(self.maxBatchRows),
            max_bytes=self.getOrDefault(self.maxBatchBytes),
            concurrency=self.getOrDefault(self.concurrency),
            max_retries=self.getOrDefault(self.maxRetries),
            backoff=self.getOrDefault(self.retryBackoff),
            timeout=self.getOrDefault(self.requestTimeout),
            error_column=self.getOrDefault(self.errorCol) if policy == "column" else None,
            variant_column=variant_col or None,
            target_variant=self.getOrDefault(self.targetVariant) or None,
        )
        if not hasattr(F, "arrow_udf"):  # pyspark 4.0: whole batches through mapInArrow
            return dataset.mapInArrow(plan.run, StructType(fields + extra))
        # Only the features cross into Python (an iterator Arrow UDF), as array<float> when the vectors are
        # dense-able: Spark's VectorUDT → Arrow conversion otherwise costs more than the endpoint calls.
        column = F.col(features)
        if isinstance(dataset.schema[features].dataType, VectorUDT) and self._dense_features(metadata):
            column = F.when(column.isNull(), F.lit(None)).otherwise(vector_to_array(column, "float32"))
        from pyspark.sql.pandas.functions import ArrowUDFType

        scored_col = f"__endpoint_{uuid.uuid4().hex[:8]}"
        with warnings.catch_warnings():  # it prefers type hints; a bound method's are not resolvable here
            warnings.simplefilter("ignore", UserWarning)
            udf = F.arrow_udf(plan.run_columns, StructType(extra), ArrowUDFType.SCALAR_ITER)
        scored = dataset.withColumn(scored_col, udf(column))
        return scored.select(*[F.col(c) for c in dataset.columns], *[F.col(f"{scored_col}.{f.name}") for f in extra])

    def _dense_features(self, metadata) -> bool:
        """Whether to send vectors as array<float>: when the endpoint says it takes at most 4096 features."""
        try:
            dims = [m.get("feature_dim") for m in metadata().values() if isinstance(m, dict)]
        except Exception:  # noqa: BLE001 - no metadata: keep the vectors as they are
            return False
        return bool(dims) and all(isinstance(d, int) and 0 < d <= 4096 for d in dims)


# ------------------------------------------------------------------------------------- executor side


def pa_record_batch(columns, names):
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(columns, names=names)


class EndpointCallError(RuntimeError):
    pass


@dataclass
class Segment:
    start: int
    stop: int
    outputs: dict[str, np.ndarray] | None = None
    variant: str | None = None
    error: str | None = None


@dataclass
class ScoringPlan:
    """Everything a partition needs (pickled to the executors)."""

    url: str
    token: str | None
    features_index: int
    features_col: str
    serializer: RequestSerializer
    deserializer: ResponseDeserializer
    outputs: list[OutputSpec]
    max_rows: int
    max_bytes: int
    concurrency: int
    max_retries: int
    backoff: float
    timeout: float
    error_column: str | None
    variant_column: str | None
    target_variant: str | None = None
    headers: dict = field(default_factory=dict)

    def run(self, batches):
        """``mapInArrow`` form: whole record batches in, the same batches plus the output columns out."""
        items = ((batch, batch.column(self.features_index), batch.num_rows) for batch in batches)
        for batch, (columns, names) in self._score(items):
            yield pa_record_batch(list(batch.columns) + columns, list(batch.schema.names) + names)

    def run_columns(self, arrays):
        """Arrow iterator-UDF form: features arrays in, structs of the output columns out (in order)."""
        import pyarrow as pa

        for _, (columns, names) in self._score((None, a, len(a)) for a in arrays):
            yield pa.StructArray.from_arrays(columns, names=names)

    def _score(self, items):
        """(tag, features column, rows) in; (tag, (output columns, names)) out in input order, requests to the
        endpoint running ``concurrency`` at a time across item boundaries."""
        from ..arrow_vectors import vectors_from_arrow

        self.headers = {"Content-Type": self.serializer.content_type, "Accept": self.deserializer.accept}
        if self.token:
            self.headers["Authorization"] = f"Bearer {self.token}"
        if self.target_variant:
            self.headers["X-Target-Variant"] = self.target_variant
        pending: deque = deque()
        with ThreadPoolExecutor(self.concurrency) as pool:
            for tag, column, n in items:
                entry = {"tag": tag, "rows": n, "futures": [], "sealed": False}
                pending.append(entry)
                if n:
                    rows = self.serializer.serialize(vectors_from_arrow(column, self.features_col).matrix)
                    for start, stop in self.cut(rows):
                        in_flight = [f for e in pending for f in e["futures"] if not f.done()]
                        if len(in_flight) >= self.concurrency:
                            wait(in_flight, return_when=FIRST_COMPLETED)
                        entry["futures"].append(pool.submit(self.call, rows, start, stop))
                entry["sealed"] = True
                while pending and pending[0]["sealed"] and all(f.done() for f in pending[0]["futures"]):
                    entry = pending.popleft()
                    yield entry["tag"], self.assemble(entry)
            while pending:
                entry = pending.popleft()
                yield entry["tag"], self.assemble(entry)

    def cut(self, rows) -> list[tuple[int, int]]:
        """Row ranges of at most ``max_rows`` rows and ``max_bytes`` bytes (a larger single row: error)."""
        n = len(rows.ends)
        budget = self.max_bytes - self.serializer.overhead()
        spans, start = [], 0
        while start < n:
            base = int(rows.ends[start - 1]) if start else 0
            stop = int(np.searchsorted(rows.ends, base + budget, side="right"))
            stop = min(stop, start + self.max_rows, n)
            if stop == start:
                raise ValueError(
                    f"a row of {rows.size(start, start + 1)} bytes exceeds maxBatchBytes={self.max_bytes}"
                )
            spans.append((start, stop))
            start = stop
        return spans

    def call(self, rows, start: int, stop: int) -> list[Segment]:
        status, body, variant = self.post(self.serializer.body(rows, start, stop))
        if status < 300:
            try:
                out = self.deserializer.deserialize(body, stop - start)
                counts = {k: len(v) for k, v in out.items()}
                if any(c != stop - start for c in counts.values()):
                    raise ValueError(f"the endpoint returned {counts} predictions for {stop - start} rows")
                return [Segment(start, stop, out, variant)]
            except ValueError as exc:
                message = f"cannot read the response of variant {variant}: {exc}"
                if not self.error_column:
                    raise EndpointCallError(message) from None
                return [Segment(start, stop, None, variant, message)]
        message = f"{status}: {body.decode('utf-8', 'replace')[:1000]}"
        if not self.error_column:
            raise EndpointCallError(
                f"endpoint {self.url} answered {message} for a batch of {stop - start} rows"
            )
        if status in ROW_FAULT_STATUSES and stop - start > 1:  # isolate the rows at fault
            middle = (start + stop) // 2
            return self.call(rows, start, middle) + self.call(rows, middle, stop)
        return [Segment(start, stop, None, variant, message)]

    def post(self, body: bytes) -> tuple[int, bytes, str | None]:
        import requests

        from ..endpoints.client import session

        attempt = 0
        while True:
            try:
                resp = session().post(
                    self.url + "/invocations", data=body, headers=self.headers, timeout=self.timeout
                )
                status, content = resp.status_code, resp.content
                variant = resp.headers.get("X-Invoked-Production-Variant")
                retry_after = resp.headers.get("Retry-After")
            except (requests.ConnectionError, requests.Timeout) as exc:
                status, content, variant, retry_after = (
                    599,
                    f"{type(exc).__name__}: {exc}".encode(),
                    None,
                    None,
                )
            if status not in RETRYABLE and status != 599 or attempt >= self.max_retries:
                return (503 if status == 599 else status), content, variant
            delay = min(self.backoff * 2**attempt, 10.0) * (0.5 + random.random())
            if retry_after and retry_after.isdigit():
                delay = max(delay, float(retry_after))
            time.sleep(delay)
            attempt += 1

    def assemble(self, entry) -> tuple[list, list[str]]:
        """The output columns (and their names) of one item, from its requests' results."""
        import pyarrow as pa

        from ..arrow_vectors import dense_to_arrow

        n = entry["rows"]
        segments = [s for f in entry["futures"] for s in f.result()]
        columns, names = [], []
        for spec in self.outputs:
            values, valid = None, np.zeros(n, bool)
            for s in segments:
                if s.outputs is None or spec.name not in s.outputs:
                    continue
                part = np.asarray(s.outputs[spec.name], np.float64)
                if spec.kind == "vector" and part.ndim == 1:
                    part = part.reshape(-1, 1)
                if values is None:
                    values = np.zeros((n,) + part.shape[1:], np.float64)
                values[s.start : s.stop] = part
                valid[s.start : s.stop] = True
            if spec.kind == "vector":
                width = values.shape[1] if values is not None else 0
                columns.append(dense_to_arrow(values if values is not None else np.zeros((n, width)), valid))
            else:
                columns.append(
                    pa.array(values if values is not None else np.zeros(n), pa.float64(), mask=~valid)
                )
            names.append(spec.name)
        if self.variant_column:
            variants = np.full(n, None, object)
            for s in segments:
                variants[s.start : s.stop] = s.variant
            columns.append(pa.array(variants, pa.string()))
            names.append(self.variant_column)
        if self.error_column:
            errors = np.full(n, None, object)
            for s in segments:
                errors[s.start : s.stop] = s.error
            columns.append(pa.array(errors, pa.string()))
            names.append(self.error_column)
        return columns, names

"""``EndpointModel``: a Spark ML Transformer that scores a DataFrame through an inference endpoint.

Per partition (``mapInArrow``, so it runs under Spark Connect too): each Arrow batch's feature
column is encoded once, cut into requests of at most ``maxBatchRows`` rows and ``maxBatchBytes``
bytes, sent with at most ``concurrency`` requests in flight, retried with exponential backoff on
5xx / 429 / connection errors, and joined back to its rows in order. Output columns carry SageMaker's
names (``score``, ``predicted_label``, ``closest_cluster``, ``projection``, …; scalars as double,
vectors as ML vectors); with A/B variants serving different algorithms the columns are the union and a
row's other columns are null. ``errorPolicy="fail"`` fails the job on a non-retryable error;
``"column"`` puts the error in ``errorCol`` (a 4xx batch is bisected so only bad rows are marked).
The requests themselves are :mod:`.http_batching`'s (no Spark there); this module is the Spark side:
Params, the output schema, and handing the plan to ``mapInArrow`` or an Arrow UDF.
"""

from __future__ import annotations

import functools
import json
import uuid
import warnings

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from .http_batching import DEFAULT_MAX_BYTES, OutputSpec, ScoringPlan, outputs_from_metadata
from .serializers import RequestSerializer, ResponseDeserializer, deserializer, serializer

__all__ = ["EndpointModel", "OutputSpec"]


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
        from ..endpoints.client import endpoint_metadata, resolve_endpoint

        target = resolve_endpoint(self.getOrDefault(self.endpoint), self._auth_token)
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
            target=target,
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

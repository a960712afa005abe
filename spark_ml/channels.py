"""DataFrame → channel: ``to_channel`` and the registration of the ``recordio-protobuf`` data source."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from algorithms.channel import DISTRIBUTIONS, SHARDED_BY_KEY, Channel

from .datasource import SHORT_NAME, ChannelWriteError, RecordIOProtobufDataSource


def register(spark: SparkSession) -> str:
    """Make ``format("recordio-protobuf")`` available in this session (classic or Spark Connect).

    When the spark-ml Scala jar is on the classpath its JVM data source already owns the name (and is much
    faster); the Python one registers only when it is absent. Returns which one answers: "jvm" or "python".
    The answer is remembered on the session, so every entry point calls this.
    """
    _make_active(spark)
    known = getattr(spark, _REGISTERED, None)
    if known is not None:  # the answer cannot change within a session; asking costs a JVM exception (~15 ms)
        return known
    try:
        spark.dataSource.register(RecordIOProtobufDataSource)
        answer = "python"
    except Exception as exc:  # noqa: BLE001 - only the name clash is expected
        if "DATA_SOURCE_ALREADY_EXISTS" not in str(exc):
            raise
        answer = "jvm"
    setattr(spark, _REGISTERED, answer)
    return answer


_REGISTERED = "_spark_ml_recordio_source"


def _make_active(spark: SparkSession) -> None:
    """Classic Spark looks Python data sources up in the thread's *active* session, which threads other than
    the one that built the session (CrossValidator's pool, notebook threads) lack: make ours active."""
    from .runner.sessions import is_connect

    if not is_connect(spark):
        spark._jvm.org.apache.spark.sql.SparkSession.setActiveSession(spark._jsparkSession)


def to_channel(df: DataFrame, path: str, featuresCol: str = "features", labelCol: str | None = None, *,
               recordsPerShard: int | None = None, shardSizeBytes: int | None = None, dtype: str = "float32",
               allowNonFinite: bool = False, mode: str = "overwrite", distribution: str = SHARDED_BY_KEY,
               vectorLayout: str = "auto") -> Channel:
    """Write ``df`` as a recordIO-protobuf channel at ``path`` (local path or any pyarrow.fs URI).

    ``labelCol`` defaults to a column named ``label`` when there is one. ``vectorLayout`` says how
    VectorUDT features cross into Python: ``"dense"`` converts them to ``array<float>`` in the JVM first
    (much faster), ``"sparse"`` keeps vectors as they are, ``"auto"`` looks at the first row.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    if mode not in ("overwrite", "append"):
        raise ValueError(f"mode must be 'overwrite' or 'append', got {mode!r}")
    if vectorLayout not in ("auto", "dense", "sparse"):
        raise ValueError(f"vectorLayout must be auto, dense or sparse, got {vectorLayout!r}")
    source = register(df.sparkSession)
    if featuresCol not in df.columns:
        raise ValueError(f"featuresCol {featuresCol!r} is not a column (columns: {', '.join(df.columns)})")
    if labelCol is None and "label" in df.columns and featuresCol != "label":
        labelCol = "label"
    if labelCol is not None and labelCol not in df.columns:
        raise ValueError(f"labelCol {labelCol!r} is not a column (columns: {', '.join(df.columns)})")
    columns = [featuresCol] + ([labelCol] if labelCol else [])
    projected = df.select(*columns)
    if source == "python":  # the JVM writer reads vectors natively
        projected = _project_features(projected, featuresCol, vectorLayout, dtype)
    writer = projected.write.format(SHORT_NAME).mode(mode).option("featuresCol", featuresCol).option("dtype", dtype)
    writer = writer.option("allowNonFinite", str(bool(allowNonFinite)).lower())
    if labelCol:
        writer = writer.option("labelCol", labelCol)
    if recordsPerShard is not None:
        writer = writer.option("recordsPerShard", str(recordsPerShard))
    if shardSizeBytes is not None:
        writer = writer.option("shardSizeBytes", str(shardSizeBytes))
    try:
        writer.save(path)
    except Exception as exc:
        reason = _write_error_reason(exc)
        if reason is None:
            raise
        raise ChannelWriteError(reason) from None
    return Channel.open(path, distribution=distribution)


def _write_error_reason(exc: Exception) -> str | None:
    """The data source's own message, out of the Spark/py4j exception that wraps it."""
    marker = f"{ChannelWriteError.__name__}: "
    for line in str(exc).splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return None


def _project_features(df: DataFrame, column: str, layout: str, dtype: str) -> DataFrame:
    """Turn dense VectorUDT features into ``array<float>`` inside the JVM, before data crosses to Python."""
    if type(df.schema[column].dataType).__name__ != "VectorUDT" or layout == "sparse":
        return df
    if layout == "auto":
        from pyspark.ml.linalg import DenseVector

        first = df.select(column).head()
        if first is None or not isinstance(first[0], DenseVector):
            return df
    from pyspark.ml.functions import vector_to_array

    return df.withColumn(column, vector_to_array(column, dtype))

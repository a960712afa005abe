"""``recordio-protobuf``: a Spark data source (Python Data Source API, Arrow batches) for channels.

Write: ``df.write.format("recordio-protobuf").mode("overwrite").option("featuresCol", "features").save(path)``
turns each Arrow batch into framed records with the vectorized codec. Tasks write their shards under
``<path>/_temporary/<job>/``; the driver's commit moves them into place and writes ``manifest.json``
last, so a failed or cancelled write leaves nothing that looks like a channel. A failed or cancelled write
leaves no temporary files either: a task removes every shard it wrote when it fails, and the driver's abort
drops a tombstone (``_temporary/<job>.aborted``) that tasks still running look for before and after each
shard, since Spark lets a cancelled task's Python process run on for a while after the abort.

Read: ``spark.read.format("recordio-protobuf").load(path)`` gives ``features`` (VectorUDT, sparse stays
sparse) and ``label`` when the records have one, one partition per shard. Folders without a manifest
(SageMaker's SDK, sagemaker-spark) are read by listing their ``.pbr`` files.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    FloatType,
    NumericType,
    StructField,
    StructType,
)

from algorithms import fs as fsutil
from algorithms.channel import MANIFEST, RECORDIO_PROTOBUF, Channel, Manifest, Shard
from algorithms.reader import iter_file_batches
from algorithms.tensor_codec import encode_dense, encode_sparse

from .arrow_vectors import (
    ColumnError,
    first_non_finite,
    labels_from_arrow,
    matrix_to_arrow,
    vectors_from_arrow,
)

SHORT_NAME = "recordio-protobuf"
WRITE_OPTIONS = {"path", "featurescol", "labelcol", "recordspershard", "shardsizebytes", "dtype",
                 "allownonfinite"}
READ_OPTIONS = {"path", "paths", "batchsize", "featuredim"}
DEFAULT_SHARD_BYTES = 128 << 20
READ_BATCH = 8192
# How long an abort keeps its tombstone and sweeps the staging folder when tasks may still be writing: Spark
# kills a cancelled task's Python worker after spark.python.task.killTimeout (2 s by default).
ABORT_GRACE_SECONDS = 3.0


class ChannelWriteError(ValueError):
    pass


def _vector_udt():
    from pyspark.ml.linalg import VectorUDT

    return VectorUDT()


def _is_vector(data_type) -> bool:
    return type(data_type).__name__ == "VectorUDT"


def _opt(options, name: str, default=None):
    for key, value in options.items():
        if key.lower() == name.lower():
            return value
    return default


def _bool_opt(options, name: str, default: bool) -> bool:
    raw = _opt(options, name)
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text not in ("true", "false"):
        raise ChannelWriteError(f"option {name} must be true or false, got {raw!r}")
    return text == "true"


def _int_opt(options, name: str) -> int | None:
    raw = _opt(options, name)
    if raw is None:
        return None
    try:
        value = int(str(raw))
    except ValueError:
        raise ChannelWriteError(f"option {name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ChannelWriteError(f"option {name} must be a positive integer, got {raw!r}")
    return value


def _check_options(options, allowed: set[str], what: str) -> None:
    unknown = sorted(k for k in options if k.lower() not in allowed)
    if unknown:
        names = {"featurescol": "featuresCol", "labelcol": "labelCol", "recordspershard": "recordsPerShard",
                 "shardsizebytes": "shardSizeBytes", "allownonfinite": "allowNonFinite", "batchsize": "batchSize",
                 "featuredim": "featureDim"}
        known = ", ".join(names.get(k, k) for k in sorted(allowed - {"path", "paths"}))
        raise ChannelWriteError(f"unknown {what} option {unknown[0]!r} for {SHORT_NAME} (known: {known})")


def _path_of(options) -> str:
    path = _opt(options, "path")
    if not path:
        raise ChannelWriteError(f"{SHORT_NAME} needs a path: .save(path) / .load(path)")
    return path


class RecordIOProtobufDataSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return SHORT_NAME

    def schema(self) -> StructType:
        _check_options(self.options, READ_OPTIONS, "read")
        info = _probe(_path_of(self.options))
        fields = [StructField("features", _vector_udt(), nullable=True)]
        if info.has_label:
            label_type = DoubleType() if (info.label_dim or 1) == 1 else _vector_udt()
            fields.append(StructField("label", label_type, nullable=True))
        return StructType(fields)

    def reader(self, schema: StructType) -> DataSourceReader:
        return _Reader(_path_of(self.options), schema, self.options)

    def writer(self, schema: StructType, overwrite: bool) -> DataSourceArrowWriter:
        return _Writer(dict(self.options), schema, overwrite)


# ------------------------------------------------------------------------------------------------- read


@dataclass
class _ChannelInfo:
    channel: Channel
    has_label: bool
    label_dim: int | None
    feature_dim: int | None


def _probe(path: str) -> _ChannelInfo:
    channel = Channel.open(path)
    manifest = channel.manifest
    if manifest is not None:
        return _ChannelInfo(channel, manifest.has_label, manifest.label_dim, manifest.feature_dim)
    for shard in channel.shards():
        for batch in iter_file_batches(channel.shard_uri(shard), 1):
            label_dim = None if batch.labels is None else (1 if batch.labels.ndim == 1 else batch.labels.shape[1])
            return _ChannelInfo(channel, batch.labels is not None, label_dim, None)
    return _ChannelInfo(channel, False, None, None)


class _Reader(DataSourceReader):
    def __init__(self, path: str, schema: StructType, options):
        self.path = path
        self.schema = schema
        self.batch_size = int(_opt(options, "batchSize", READ_BATCH))
        dim = _opt(options, "featureDim")
        self.feature_dim = int(dim) if dim is not None else None

    def partitions(self):
        channel = Channel.open(self.path)
        dim = self.feature_dim or channel.feature_dim
        return [InputPartition((channel.shard_uri(s), dim, s.records)) for s in channel.shards()]

    def read(self, partition: InputPartition):
        uri, dim, records = partition.value
        names = [f.name for f in self.schema.fields]
        for batch in iter_file_batches(uri, self.batch_size, feature_dim=dim, expected_records=records):
            columns = [matrix_to_arrow(batch.features)]
            if "label" in names:
                if batch.labels is None:
                    raise ValueError(f"{uri}: records have no label but the channel's first records do")
                labels = batch.labels
                columns.append(pa.array(labels.astype(np.float64)) if labels.ndim == 1
                               else matrix_to_arrow(labels.astype(np.float64)))
            yield pa.RecordBatch.from_arrays(columns, names=names)


# ------------------------------------------------------------------------------------------------ write


@dataclass
class _ShardWritten(WriterCommitMessage):
    """What one task wrote: its shard files and the shape of its data (checked across tasks at commit)."""

    partition: int
    shards: list[tuple[str, int, int]] = field(default_factory=list)  # (name, records, bytes)
    feature_dim: int | None = None
    label_dim: int | None = None
    sparse: bool = False
    first_row: int = 0


@dataclass
class _WriteConfig:
    path: str
    features_col: str
    label_col: str | None
    records_per_shard: int | None
    shard_bytes: int
    dtype: np.dtype
    allow_non_finite: bool


def _write_config(options, schema: StructType) -> _WriteConfig:
    _check_options(options, WRITE_OPTIONS, "write")
    path = _path_of(options)
    names = {f.name: f for f in schema.fields}
    features_col = _opt(options, "featuresCol", "features")
    if features_col not in names:
        raise ChannelWriteError(f"featuresCol {features_col!r} is not a column (columns: {', '.join(names)})")
    ftype = names[features_col].dataType
    if not (_is_vector(ftype) or (isinstance(ftype, ArrayType) and isinstance(ftype.elementType,
                                                                               FloatType | DoubleType))):
        raise ChannelWriteError(f"featuresCol {features_col!r} has type {ftype.simpleString()}; expected a vector "
                                "(pyspark.ml.linalg.VectorUDT) or array<float|double>")
    label_col = _opt(options, "labelCol")
    if label_col is None and "label" in names and features_col != "label":
        label_col = "label"
    if label_col is not None:
        if label_col not in names:
            raise ChannelWriteError(f"labelCol {label_col!r} is not a column (columns: {', '.join(names)})")
        ltype = names[label_col].dataType
        if not (isinstance(ltype, NumericType) or _is_vector(ltype)
                or (isinstance(ltype, ArrayType) and isinstance(ltype.elementType, NumericType))):
            raise ChannelWriteError(f"labelCol {label_col!r} has type {ltype.simpleString()}; labels must be numeric")
    dtype = str(_opt(options, "dtype", "float32")).lower()
    if dtype not in ("float32", "float64"):
        raise ChannelWriteError(f"option dtype must be float32 or float64, got {dtype!r}")
    records = _int_opt(options, "recordsPerShard")
    shard_bytes = _int_opt(options, "shardSizeBytes")
    if records is not None and shard_bytes is not None:
        raise ChannelWriteError("give recordsPerShard or shardSizeBytes, not both")
    return _WriteConfig(path, features_col, label_col, records, shard_bytes or DEFAULT_SHARD_BYTES,
                        np.dtype(dtype), _bool_opt(options, "allowNonFinite", False))


class _Writer(DataSourceArrowWriter):
    def __init__(self, options, schema: StructType, overwrite: bool):
        self.config = _write_config(options, schema)
        self.overwrite = overwrite
        self.job = uuid.uuid4().hex[:12]

    # On executors -------------------------------------------------------------------------------------
    def write(self, iterator) -> _ShardWritten:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        partition = ctx.partitionId() if ctx else 0
        cfg = self.config
        fs, root = fsutil.resolve(cfg.path)
        staging = _child(fs, root, "_temporary", self.job)
        tombstone = _child(fs, root, "_temporary", f"{self.job}{ABORTED}")
        message = _ShardWritten(partition)
        shard = _ShardFile(fs, staging, partition, self.job)
        closed: list[_ShardFile] = []
        row = 0
        try:
            for batch in _fit_to_shards(iterator, cfg.records_per_shard):
                data = self._encode(batch, row, partition, message)
                row += batch.num_rows
                if shard.stream is None:
                    _stop_if_aborted(fs, tombstone, cfg.path)
                shard.append(data, batch.num_rows)
                if (cfg.records_per_shard and shard.records >= cfg.records_per_shard) or (
                        not cfg.records_per_shard and shard.bytes >= cfg.shard_bytes):
                    message.shards.append(shard.close())
                    closed.append(shard)
                    shard = _ShardFile(fs, staging, partition, self.job, len(message.shards))
            if shard.records:
                message.shards.append(shard.close())
                closed.append(shard)
            else:
                shard.discard()
            _stop_if_aborted(fs, tombstone, cfg.path)  # finished after the driver gave up: nobody will move these
        except BaseException:
            for written in [*closed, shard]:  # a failed task leaves none of its shards behind
                written.discard()
            raise
        return message

    def _encode(self, batch: pa.RecordBatch, row: int, partition: int, message: _ShardWritten) -> bytes:
        cfg = self.config
        where = f"partition {partition}, row "
        try:
            vectors = vectors_from_arrow(batch.column(cfg.features_col), cfg.features_col, cfg.dtype, row)
            labels = None
            if cfg.label_col is not None:
                labels = labels_from_arrow(batch.column(cfg.label_col), cfg.label_col, cfg.dtype, row)
        except ColumnError as exc:
            raise ChannelWriteError(f"{exc} (rows counted within partition {partition})") from None
        if not cfg.allow_non_finite:
            for what, values in (("featuresCol " + repr(cfg.features_col), vectors.matrix),
                                 ("labelCol " + repr(cfg.label_col), labels)):
                if values is None:
                    continue
                bad = first_non_finite(values)
                if bad is not None:
                    raise ChannelWriteError(f"{what} holds NaN or infinity at {where}{row + bad}; "
                                            "set option allowNonFinite=true to write it anyway")
        dim = vectors.dim
        if message.feature_dim is None:
            message.feature_dim = dim
            message.first_row = row
        elif message.feature_dim != dim:
            raise ChannelWriteError(f"featuresCol {cfg.features_col!r}: vectors of differing length: {where}"
                                    f"{message.first_row} has size {message.feature_dim}, {where}{row} has size {dim}")
        label_dim = None if labels is None else (1 if labels.ndim == 1 else labels.shape[1])
        if message.label_dim is None:
            message.label_dim = label_dim
        if vectors.dense is not None:
            return encode_dense(vectors.dense, labels)
        message.sparse = True
        return encode_sparse(vectors.csr, labels, vectors.dense_rows)

    # On the driver ------------------------------------------------------------------------------------
    def commit(self, messages) -> None:
        cfg = self.config
        fs, root = fsutil.resolve(cfg.path)
        staging = _child(fs, root, "_temporary", self.job)
        try:
            written = [m for m in messages if m is not None and m.shards]
            dims = {m.feature_dim for m in written}
            if len(dims) > 1:
                first, other = written[0], next(m for m in written if m.feature_dim != written[0].feature_dim)
                raise ChannelWriteError(
                    f"featuresCol {cfg.features_col!r}: vectors of differing length: partition {first.partition} "
                    f"holds size {first.feature_dim}, partition {other.partition} holds size {other.feature_dim}")
            label_dims = {m.label_dim for m in written}
            if len(label_dims) > 1:
                raise ChannelWriteError(f"labelCol {cfg.label_col!r}: labels of differing length across partitions")
            previous = _existing_manifest(fs, root)
            shards = [Shard(name, records, size) for m in sorted(written, key=lambda m: m.partition)
                      for name, records, size in m.shards]
            feature_dim = dims.pop() if dims else None
            label_dim = label_dims.pop() if label_dims else None
            sparse = any(m.sparse for m in written)
            keep: list[Shard] = []
            if previous is not None and not self.overwrite:
                if feature_dim is not None and previous.feature_dim not in (None, feature_dim):
                    raise ChannelWriteError(f"cannot append {feature_dim}-feature records to {cfg.path}, which holds "
                                            f"{previous.feature_dim} features")
                if written and previous.shards and previous.has_label != (label_dim is not None):
                    given = "with" if label_dim else "without"
                    held = "have" if previous.has_label else "lack"
                    raise ChannelWriteError(f"cannot append records {given} labels to {cfg.path}, whose records "
                                            f"{held} them")
                keep = list(previous.shards)
                feature_dim = feature_dim if feature_dim is not None else previous.feature_dim
                label_dim = label_dim if label_dim is not None else previous.label_dim
                sparse = sparse or bool(previous.sparse)
            elif self.overwrite:
                _remove_channel_files(fs, root)
                _remove_stale_staging(fs, root, self.job)
            for shard in shards:
                fs.move(_child(fs, staging, shard.path), _child(fs, root, shard.path))
            manifest = Manifest(content_type=RECORDIO_PROTOBUF, shards=tuple(keep + shards), feature_dim=feature_dim,
                                has_label=label_dim is not None, label_dim=label_dim, sparse=sparse,
                                feature_dtype=str(cfg.dtype))
            fsutil.write_bytes_atomic(fs, _child(fs, root, MANIFEST), manifest.to_json().encode())
        finally:
            fsutil.delete_dir_quietly(fs, staging)
            _remove_if_empty(fs, _child(fs, root, "_temporary"))

    def abort(self, messages) -> None:
        """Remove what the tasks wrote; while tasks may still be running, hold a tombstone that tells them to stop
        (before their next shard) and to remove their own files, and sweep what appears meanwhile."""
        fs, root = fsutil.resolve(self.config.path)
        temporary = _child(fs, root, "_temporary")
        staging = _child(fs, temporary, self.job)
        tombstone = _child(fs, temporary, f"{self.job}{ABORTED}")
        fs.create_dir(temporary, recursive=True)
        with fs.open_output_stream(tombstone):
            pass
        messages = list(messages or [])
        accounted = {name for m in messages if m is not None for name, _, _ in m.shards}
        found = fs.get_file_info(pafs.FileSelector(staging, allow_not_found=True))
        stray = [info for info in found if info.base_name not in accounted]
        fsutil.delete_dir_quietly(fs, staging)
        # A task that ended (failed or succeeded) has cleaned up or is accounted for; more than one task without a
        # message, or files no finished task claims, mean some may still be writing
        if stray or sum(m is None for m in messages) > 1:
            deadline = time.monotonic() + ABORT_GRACE_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.25)
                fsutil.delete_dir_quietly(fs, staging)
        with contextlib.suppress(FileNotFoundError, OSError):
            fs.delete_file(tombstone)
        _remove_if_empty(fs, temporary)


ABORTED = ".aborted"


def _stop_if_aborted(fs: pafs.FileSystem, tombstone: str, path: str) -> None:
    if fsutil.exists(fs, tombstone):
        raise ChannelWriteError(f"the write to {path} was aborted (a task failed or the job was cancelled)")


def _fit_to_shards(batches, records_per_shard: int | None):
    """Non-empty Arrow batches, split so that shards of ``records_per_shard`` records end on a batch edge."""
    room = records_per_shard
    for batch in batches:
        start = 0
        while start < batch.num_rows:
            take = batch.num_rows - start if room is None else min(room, batch.num_rows - start)
            yield batch.slice(start, take)
            start += take
            if room is not None:
                room = room - take or records_per_shard


class _ShardFile:
    """One shard being written by a task: ``part-<partition>-<n>-<job>.pbr`` under the job's staging folder."""

    def __init__(self, fs: pafs.FileSystem, staging: str, partition: int, job: str, index: int = 0):
        self.name = f"part-{partition:05d}-{index:03d}-{job}.pbr"
        self.fs = fs
        self.path = _child(fs, staging, self.name)
        self.stream = None
        self.records = 0
        self.bytes = 0

    def append(self, data: bytes, records: int) -> None:
        if self.stream is None:
            self.fs.create_dir(os.path.dirname(self.path) if fsutil.is_local(self.fs)
                               else posixpath.dirname(self.path), recursive=True)
            self.stream = self.fs.open_output_stream(self.path)
        self.stream.write(data)
        self.records += records
        self.bytes += len(data)

    def close(self) -> tuple[str, int, int]:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        return self.name, self.records, self.bytes

    def discard(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(OSError):  # its folder may be gone already (the driver's abort)
                self.stream.close()
            self.stream = None
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_file(self.path)


def _child(fs: pafs.FileSystem, root: str, *names: str) -> str:
    return os.path.join(root, *names) if fsutil.is_local(fs) else posixpath.join(root, *names)


def _existing_manifest(fs: pafs.FileSystem, root: str) -> Manifest | None:
    path = _child(fs, root, MANIFEST)
    if not fsutil.exists(fs, path):
        return None
    return Manifest.from_json(fsutil.read_bytes(fs, path).decode(), path)


def _remove_channel_files(fs: pafs.FileSystem, root: str) -> None:
    """Overwrite: drop the old manifest first (the folder stops looking complete), then its data files."""
    manifest = _child(fs, root, MANIFEST)
    if fsutil.exists(fs, manifest):
        fs.delete_file(manifest)
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=False, allow_not_found=True)):
        if info.type == pafs.FileType.File and info.base_name.endswith(".pbr"):
            fs.delete_file(info.path)


def _remove_stale_staging(fs: pafs.FileSystem, root: str, job: str) -> None:
    """Leftovers of earlier failed writes (a task cancelled after its job aborted can still write)."""
    for info in fs.get_file_info(pafs.FileSelector(_child(fs, root, "_temporary"), allow_not_found=True)):
        if info.base_name == job:
            continue
        if info.type == pafs.FileType.Directory:
            fsutil.delete_dir_quietly(fs, info.path)
        else:
            fs.delete_file(info.path)


def _remove_if_empty(fs: pafs.FileSystem, path: str) -> None:
    try:
        if not fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
            fs.delete_dir(path)
    except OSError:
        pass

"""Seq2Seq's three channels from a DataFrame of sentence pairs: vocabularies counted in the executors, then
``train`` / ``validation`` written by the executors as recordIO-protobuf shards of int32 ``source`` /
``target`` ids (SageMaker's layout), and ``vocab`` (``vocab.src.json``, ``vocab.trg.json`` and, with a
SentencePiece tokenizer, ``sentencepiece.model``). Pairs whose source or target has no tokens (or is null)
are skipped, as SageMaker's example preprocessing skips empty lines. Shards are written under a temporary
name and renamed; each channel's ``manifest.json`` comes last."""

from __future__ import annotations

import uuid
from collections import Counter

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from algorithms import fs as fsutil
from algorithms.builtin.seq2seq.tokenize import SENTENCEPIECE_FILE, Tokenizer
from algorithms.builtin.seq2seq.vocab import SOURCE_FILE, TARGET_FILE, Vocabulary
from algorithms.channel import FULLY_REPLICATED, MANIFEST, RECORDIO_PROTOBUF, Channel, Manifest, Shard

from .arrow_vectors import ColumnError


def check_columns(df: DataFrame, **columns: str) -> None:
    for param, name in columns.items():
        if name not in df.columns:
            raise ColumnError(f"{param} {name!r} is not a column (columns: {', '.join(df.columns)})")
        kind = df.schema[name].dataType
        if not isinstance(kind, StringType):
            raise ColumnError(f"{param} {name!r} must hold strings (sentences), not {kind.simpleString()}")


def count_tokens(df: DataFrame, column: str, tokenizer: Tokenizer) -> Counter:
    """Token counts of a string column: counted per partition in the executors, summed by Spark."""
    model = tokenizer.model_bytes

    def count(batches):
        tok = Tokenizer(model)
        counts: Counter = Counter()
        for batch in batches:
            for text in batch.column(0).to_pylist():
                if text:
                    counts.update(tok.split(text))
        if counts:
            yield pa.RecordBatch.from_arrays([pa.array(list(counts), pa.string()),
                                              pa.array(list(counts.values()), pa.int64())], ["token", "count"])

    schema = StructType([StructField("token", StringType()), StructField("count", LongType())])
    totals = df.select(column).mapInArrow(count, schema).groupBy("token").agg(F.sum("count").alias("count"))
    return Counter({row["token"]: int(row["count"]) for row in totals.collect()})


def write_pairs(df: DataFrame, path: str, source_col: str, target_col: str, source_vocab: Vocabulary,
                target_vocab: Vocabulary, tokenizer: Tokenizer, min_shards: int) -> Channel:
    """A recordIO-protobuf channel of the pairs, one shard per non-empty partition; when that gives fewer than
    ``min_shards`` shards (every worker needs one), the pairs are spread over ``min_shards`` partitions and
    written again (rare, so cheaper than always shuffling; DataFrame APIs only, so Spark Connect works)."""
    channel = _write_pairs(df, path, source_col, target_col, source_vocab, target_vocab, tokenizer)
    if len(channel.shards()) < min_shards and (channel.num_records or 0) >= min_shards:
        fs, root = fsutil.resolve(path)
        fsutil.delete_dir_quietly(fs, root)
        channel = _write_pairs(df.repartition(min_shards), path, source_col, target_col, source_vocab, target_vocab,
                               tokenizer)
    return channel


def _write_pairs(df: DataFrame, path: str, source_col: str, target_col: str, source_vocab: Vocabulary,
                 target_vocab: Vocabulary, tokenizer: Tokenizer) -> Channel:
    model, src_ids, tgt_ids = tokenizer.model_bytes, source_vocab.ids, target_vocab.ids
    job = uuid.uuid4().hex[:8]

    def write(batches):
        from pyspark import TaskContext

        from algorithms.builtin.seq2seq import records

        tok = Tokenizer(model)
        src_v, tgt_v = Vocabulary(src_ids), Vocabulary(tgt_ids)
        name = f"part-{TaskContext.get().partitionId():05d}-{job}.pbr"
        fs, root = fsutil.resolve(path)
        final = _child(fs, root, name)
        tmp = f"{final}.{uuid.uuid4().hex}.tmp"
        count = size = 0
        with fs.open_output_stream(tmp) as out:  # streamed: a partition's records never sit in memory at once
            for batch in batches:
                pairs = []
                for source, target in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
                    s = src_v.encode(tok.split(source)) if source else None
                    t = tgt_v.encode(tok.split(target)) if target else None
                    if s is not None and t is not None and len(s) and len(t):
                        pairs.append((s, t))
                if pairs:
                    data = records.encode(source=[s for s, _ in pairs], target=[t for _, t in pairs])
                    out.write(data)
                    count, size = count + len(pairs), size + len(data)
        if count:
            fs.move(tmp, final)
        else:  # an empty partition makes no shard (a worker dealt only empty shards could not train)
            fs.delete_file(tmp)
        yield pa.RecordBatch.from_arrays([pa.array([name]), pa.array([count], pa.int64()),
                                          pa.array([size], pa.int64())], ["path", "records", "bytes"])

    schema = StructType([StructField("path", StringType()), StructField("records", LongType()),
                         StructField("bytes", LongType())])
    fs, root = fsutil.resolve(path)
    fs.create_dir(root, recursive=True)
    rows = df.select(source_col, target_col).mapInArrow(write, schema).collect()
    shards = tuple(Shard(r["path"], int(r["records"]), int(r["bytes"]))
                   for r in sorted(rows, key=lambda r: r["path"]) if r["records"])
    manifest = Manifest(RECORDIO_PROTOBUF, shards, extra={"seq2seq": {"source": source_col, "target": target_col}})
    fsutil.write_bytes_atomic(fs, _child(fs, root, MANIFEST), manifest.to_json().encode())
    return Channel.open(path)


def write_vocab(path: str, source: Vocabulary, target: Vocabulary, tokenizer: Tokenizer) -> Channel:
    fs, root = fsutil.resolve(path)
    fs.create_dir(root, recursive=True)
    files = {SOURCE_FILE: source.to_json().encode(), TARGET_FILE: target.to_json().encode()}
    if tokenizer.model_bytes is not None:
        files[SENTENCEPIECE_FILE] = tokenizer.model_bytes
    for name, data in files.items():
        fsutil.write_bytes_atomic(fs, _child(fs, root, name), data)
    return Channel.open(path, distribution=FULLY_REPLICATED)


def _child(fs, root: str, name: str) -> str:
    import os
    import posixpath

    return os.path.join(root, name) if fsutil.is_local(fs) else posixpath.join(root, name)

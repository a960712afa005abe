"""Throughput of the vectorized recordIO-protobuf codec on one core; its speed-up over the protobuf runtime;
and the streaming reader (``reader.iter_batches``) at training batch sizes.

    .venv/bin/python benchmarks/codec.py            # codec: dense 1M x 100, sparse 1M x 100k with 50 nnz/row
    .venv/bin/python benchmarks/codec.py --rows 200000
    .venv/bin/python benchmarks/codec.py --section reader   # reader: 1M x 50 dense, 1M x 100k sparse

Codec rows are processed in 10k-row batches (one batch is generated and encoded/decoded repeatedly, so memory
stays at a few hundred MB). The protobuf-runtime path (``records.batch_to_records`` + ``recordio.frame``,
``Record.FromString`` + ``records.records_to_batch``) is timed on a small sample and scaled.

The reader section writes shard files to a temporary folder (about 250 MB dense, 450 MB sparse), reads them
once to warm the page cache, then times whole passes of ``iter_batches`` at the batch sizes training uses
(PCA's default mini_batch_size is 500, Linear Learner's 1000, k-means' 5000).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file: benchmarks/algorithms.py, xgboost.py must not shadow packages
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from algorithms import reader, recordio, records, tensor_codec  # noqa: E402
from algorithms.batch import Batch  # noqa: E402
from algorithms.proto import Record  # noqa: E402


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def sparse_batch(rng: np.random.Generator, rows: int, dim: int, nnz: int) -> sp.csr_matrix:
    indices = np.sort(rng.integers(0, dim, size=(rows, nnz)), axis=1)  # duplicates are harmless here
    data = rng.normal(size=rows * nnz).astype(np.float32)
    return sp.csr_matrix((data, indices.reshape(-1), np.arange(0, rows * nnz + 1, nnz)), shape=(rows, dim))


def runtime_encode(batch: Batch) -> bytes:
    return b"".join(recordio.frame(r.SerializeToString()) for r in records.batch_to_records(batch))


def runtime_decode(data: bytes) -> Batch:
    frames = recordio.scan_frames(data)
    return records.records_to_batch([Record.FromString(frames.payload(i)) for i in range(len(frames))])


def report(name: str, total_values: float, seconds: float, unit: str) -> float:
    rate = total_values / seconds
    print(f"  {name:<28} {rate / 1e6:9.1f} M {unit}/s   ({seconds:.2f} s)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=2_000, help="rows timed through the protobuf runtime")
    parser.add_argument("--section", choices=["codec", "reader", "all"], default="all")
    parser.add_argument("--shards", type=int, default=4, help="files the reader section writes per data set")
    args = parser.parse_args()
    if args.section in ("codec", "all"):
        codec_section(args)
    if args.section in ("reader", "all"):
        reader_section(args)


def write_shards(folder: str, name: str, shards: int, rows: int, make_block) -> list[str]:
    """``shards`` files of ``rows / shards`` records each, written 10k rows at a time."""
    paths = []
    per_shard = rows // shards
    for s in range(shards):
        path = os.path.join(folder, f"{name}-{s:05d}.pbr")
        with open(path, "wb") as f:
            for lo in range(0, per_shard, 10_000):
                f.write(make_block(min(10_000, per_shard - lo)))
        paths.append(path)
    return paths


def time_reader(paths: list[str], rows: int, batch_size: int, repeats: int = 5) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of a whole pass (CPU time is steadier on a shared machine)."""
    walls, cpus = [], []
    for i in range(repeats + 1):  # the first pass warms the page cache
        wall, cpu = time.perf_counter(), time.process_time()
        seen = sum(len(batch) for batch in reader.iter_batches(paths, batch_size))
        if i:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        assert seen == rows, (seen, rows)
    return min(walls), min(cpus)


def report_reader(batch_size: int, rows: int, times: tuple[float, float]) -> None:
    wall, cpu = times
    print(f"  iter_batches(batch_size={batch_size:<5}) {wall:6.3f} s   ({rows / wall / 1e6:5.2f} M rows/s)"
          f"   cpu {cpu:6.3f} s")


def reader_section(args) -> None:
    rng = np.random.default_rng(1)
    rows = args.rows - args.rows % (args.shards * 10_000) or args.shards * 10_000
    with tempfile.TemporaryDirectory(prefix="codec-bench-") as tmp:
        print(f"\nreader: dense {rows:,} x 50 float32 with float32 labels, {args.shards} files")
        x = rng.normal(size=(10_000, 50)).astype(np.float32)
        y = rng.integers(0, 2, 10_000).astype(np.float32)
        paths = write_shards(tmp, "dense", args.shards, rows,
                             lambda n: tensor_codec.encode_dense(x[:n], y[:n]))
        for batch_size in (500, 1000, 5000):
            report_reader(batch_size, rows, time_reader(paths, rows, batch_size))
        for p in paths:
            os.remove(p)

        print(f"\nreader: sparse {rows:,} x 100,000 float32, 50 nnz per row, with labels, {args.shards} files")
        m = sparse_batch(rng, 10_000, 100_000, 50)
        paths = write_shards(tmp, "sparse", args.shards, rows,
                             lambda n: tensor_codec.encode_sparse(m[:n], y[:n]))
        for batch_size in (1000, 5000):
            report_reader(batch_size, rows, time_reader(paths, rows, batch_size))


def codec_section(args) -> None:
    rng = np.random.default_rng(0)
    batches = max(1, args.rows // args.batch)

    print(f"dense {batches * args.batch:,} x 100 float32, {args.batch:,}-row batches, with float32 labels")
    x = rng.normal(size=(args.batch, 100)).astype(np.float32)
    y = rng.integers(0, 2, args.batch).astype(np.float32)
    encoded = tensor_codec.encode_dense(x, y)
    n_values = batches * x.size
    t_enc = best_of(3, lambda: [tensor_codec.encode_dense(x, y) for _ in range(batches)])
    t_dec = best_of(3, lambda: [tensor_codec.decode(encoded) for _ in range(batches)])
    enc = report("encode_dense", n_values, t_enc, "values")
    dec = report("decode (dense)", n_values, t_dec, "values")
    print(
        f"  {len(encoded) * batches / t_enc / 2**20:9.0f} MiB/s written, "
        f"{len(encoded) * batches / t_dec / 2**20:.0f}"
        " MiB/s read"
    )
    s = Batch(x[: args.sample], y[: args.sample])
    sample_bytes = runtime_encode(s)
    assert sample_bytes == tensor_codec.encode_dense(s.features, s.labels)
    r_enc = s.features.size / best_of(1, lambda: runtime_encode(s))
    r_dec = s.features.size / best_of(1, lambda: runtime_decode(sample_bytes))
    print(
        f"  protobuf runtime: encode {r_enc / 1e6:.2f} M values/s, decode {r_dec / 1e6:.2f} M values/s"
        f" -> vectorized is {enc / r_enc:.0f}x / {dec / r_dec:.0f}x faster"
    )

    print(f"\nsparse {batches * args.batch:,} x 100,000 float32, 50 nnz per row, with float32 labels")
    m = sparse_batch(rng, args.batch, 100_000, 50)
    encoded = tensor_codec.encode_sparse(m, y)
    n_nnz = batches * m.nnz
    t_enc = best_of(3, lambda: [tensor_codec.encode_sparse(m, y) for _ in range(batches)])
    t_dec = best_of(3, lambda: [tensor_codec.decode(encoded) for _ in range(batches)])
    enc = report("encode_sparse", n_nnz, t_enc, "nnz")
    dec = report("decode (sparse)", n_nnz, t_dec, "nnz")
    s = Batch(m[: args.sample], y[: args.sample])
    sample_bytes = runtime_encode(s)
    assert sample_bytes == tensor_codec.encode_sparse(s.features, s.labels)
    r_enc = s.features.nnz / best_of(1, lambda: runtime_encode(s))
    r_dec = s.features.nnz / best_of(1, lambda: runtime_decode(sample_bytes))
    print(
        f"  protobuf runtime: encode {r_enc / 1e6:.2f} M nnz/s, decode {r_dec / 1e6:.2f} M nnz/s"
        f" -> vectorized is {enc / r_enc:.0f}x / {dec / r_dec:.0f}x faster"
    )


if __name__ == "__main__":
    main()

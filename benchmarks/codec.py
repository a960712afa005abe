"""Throughput of the vectorized recordIO-protobuf codec on one core; its speed-up over the protobuf runtime.

    .venv/bin/python benchmarks/codec.py            # dense 1M x 100 float32, sparse 1M x 100k with 50 nnz/row
    .venv/bin/python benchmarks/codec.py --rows 200000

Rows are processed in 10k-row batches (one batch is generated and encoded/decoded repeatedly, so memory
stays at a few hundred MB). The protobuf-runtime path (``records.batch_to_records`` + ``recordio.frame``,
``Record.FromString`` + ``records.records_to_batch``) is timed on a small sample and scaled.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from algorithms import recordio, records, tensor_codec  # noqa: E402
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
    args = parser.parse_args()
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

"""Stream recordIO-protobuf files as Batches of N records with bounded memory.

Each chunk read from a file is scanned and decoded once, as a whole (one vectorized decode per chunk, not
per batch). Batches are then row slices of the decoded chunk, which are views for dense features; only a
batch that straddles a chunk or file boundary is copied together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow.fs as pafs

from . import fs as fsutil
from .batch import Batch
from .recordio import scan_frames
from .tensor_codec import decode_frames

DEFAULT_CHUNK_BYTES = 4 << 20  # larger chunks decode no faster (caches) and take more memory


def iter_file_blocks(path: str, filesystem: pafs.FileSystem | None = None, feature_dim: int | None = None,
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES, source: str | None = None,
                     expected_records: int | None = None) -> Iterator[Batch]:
    """The complete records of each chunk of one file, decoded at once: one Batch per read.

    The file is read into one reused buffer; the start of a record cut off by a read moves to the front of
    the buffer for the next one. Memory stays at about one chunk plus one decoded chunk (a record larger
    than a chunk is read whole, in doubling steps). Errors name the file and the byte offset of the bad
    record, or its index in the file. ``expected_records`` (the channel manifest's count) is checked as the
    file is read: more records fail as soon as they appear, fewer when the file ends.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    fs, inner = fsutil.resolve(path, filesystem)
    name = source or path
    buf = np.empty(chunk_bytes, np.uint8)
    held = 0  # bytes at the front of `buf`: the start of a record that the previous read cut off
    held_at = 0  # their byte offset in the file
    index = 0  # record index of the next record
    with fs.open_input_stream(inner) as stream:
        while True:
            # Fill the buffer up to a chunk, so the usual leftover of a cut record needs no new buffer. Inside a
            # record longer than that, read as much again as is held: a record of size S then costs O(S)
            # copying and scanning, not O(S**2 / chunk_bytes).
            want = max(chunk_bytes - held, held)
            if len(buf) < held + want or len(buf) > 2 * (held + want):
                resized = np.empty(held + want, np.uint8)
                resized[:held] = buf[:held]
                buf = resized
            got = stream.readinto(memoryview(buf)[held : held + want])
            size = held + got
            if size == 0:
                if expected_records is not None and index != expected_records:
                    raise _count_mismatch(name, index, expected_records)
                return
            frames = scan_frames(buf[:size], name, held_at, final=got == 0)
            if len(frames):
                if expected_records is not None and index + len(frames) > expected_records:
                    raise _count_mismatch(name, f"more than {expected_records}", expected_records)
                # decode_frames copies what it returns, so `buf` can be reused for the next read.
                yield decode_frames(frames, name, feature_dim, index)
                index += len(frames)
            if got == 0:
                if expected_records is not None and index != expected_records:
                    raise _count_mismatch(name, index, expected_records)
                return
            held = size - frames.consumed
            buf[:held] = buf[frames.consumed : size]
            held_at += frames.consumed


def iter_file_batches(path: str, batch_size: int, filesystem: pafs.FileSystem | None = None,
                      feature_dim: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                      source: str | None = None, expected_records: int | None = None) -> Iterator[Batch]:
    """Batches of at most ``batch_size`` records from one file, reading ``chunk_bytes`` at a time.

    Memory stays at about one chunk plus one decoded chunk. Errors name the file and the byte offset of the
    bad record, or its index in the file.
    """
    _check_batch_size(batch_size)
    for block in iter_file_blocks(path, filesystem, feature_dim, chunk_bytes, source, expected_records):
        for lo in range(0, len(block), batch_size):
            yield block.slice(lo, min(lo + batch_size, len(block)))


def rebatch(batches: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Exactly ``batch_size`` rows per batch (the last may be shorter), across input boundaries.

    Batches that lie within one input are slices of it; only rows that straddle a boundary are copied.
    """
    _check_batch_size(batch_size)
    held: list[Batch] = []  # the last rows of earlier inputs, fewer than batch_size
    count = 0
    for batch in batches:
        n, at = len(batch), 0
        if held and n:
            at = min(batch_size - count, n)
            held.append(batch.slice(0, at))
            count += at
            if count < batch_size:
                continue
            yield Batch.concat(held)
            held, count = [], 0
        while n - at >= batch_size:
            yield batch.slice(at, at + batch_size)
            at += batch_size
        if at < n:
            held, count = [batch.slice(at, n)], n - at
    if held:
        yield Batch.concat(held)


def iter_batches(paths: Iterable[str], batch_size: int, filesystem: pafs.FileSystem | None = None,
                 feature_dim: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 expected_records: Sequence[int | None] | None = None) -> Iterator[Batch]:
    """Batches of exactly ``batch_size`` records (the last may be shorter) over a sequence of files.

    ``expected_records`` holds each file's record count from the channel's manifest (None: unknown)."""
    _check_batch_size(batch_size)
    paths = list(paths)
    counts = list(expected_records) if expected_records is not None else [None] * len(paths)
    if len(counts) != len(paths):
        raise ValueError(f"{len(paths)} files but {len(counts)} record counts")
    blocks = (block for path, count in zip(paths, counts, strict=True)
              for block in iter_file_blocks(path, filesystem, feature_dim, chunk_bytes, expected_records=count))
    return rebatch(blocks, batch_size)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _count_mismatch(name: str, found, expected: int) -> ValueError:
    return ValueError(f"{name}: holds {found} records; the channel's manifest says {expected} (the shard was "
                      "changed after the manifest was written, or the manifest is wrong)")

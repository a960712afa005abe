"""Stream recordIO-protobuf files as Batches of N records with bounded memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow.fs as pafs

from . import fs as fsutil
from .batch import Batch
from .recordio import scan_frames
from .tensor_codec import decode_frames

DEFAULT_CHUNK_BYTES = 8 << 20


def iter_file_batches(path: str, batch_size: int, filesystem: pafs.FileSystem | None = None,
                      feature_dim: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                      source: str | None = None) -> Iterator[Batch]:
    """Batches of at most ``batch_size`` records from one file, reading ``chunk_bytes`` at a time.

    Memory stays at about one chunk plus one batch (a record larger than a chunk is read whole).
    Errors name the file and the byte offset of the bad record.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    fs, inner = fsutil.resolve(path, filesystem)
    name = source or path
    with fs.open_input_stream(inner) as stream:
        pending = b""
        pending_at = 0  # byte offset of `pending` in the file
        index = 0  # record index of the next record
        eof = False
        want = chunk_bytes
        while not eof:
            chunk = stream.read(want)
            eof = len(chunk) == 0
            data = pending + chunk if pending else chunk
            if not data:
                break
            frames = scan_frames(np.frombuffer(data, np.uint8), name, pending_at, final=eof)
            for lo in range(0, len(frames), batch_size):
                part = _slice_frames(frames, lo, min(lo + batch_size, len(frames)))
                yield decode_frames(part, name, feature_dim, index)
                index += len(part)
            pending = data[frames.consumed :]
            pending_at += frames.consumed
            # Inside a record longer than a chunk, read as much again as is pending: a record of size S
            # then costs O(S) copying and scanning, not O(S**2 / chunk_bytes).
            want = max(chunk_bytes, len(pending))


def _slice_frames(frames, lo: int, hi: int):
    from .recordio import Frames

    if lo == 0 and hi == len(frames):
        return frames
    return Frames(frames.data, frames.starts[lo:hi], frames.lengths[lo:hi], 0)


def rebatch(batches: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Exactly ``batch_size`` rows per batch (the last may be shorter), across input boundaries."""
    held: list[Batch] = []
    count = 0
    for batch in batches:
        if len(batch) == 0:
            continue
        held.append(batch)
        count += len(batch)
        while count >= batch_size:
            merged = Batch.concat(held)
            yield merged.slice(0, batch_size)
            rest = merged.slice(batch_size, len(merged))
            held = [rest] if len(rest) else []
            count = len(rest)
    if count:
        yield Batch.concat(held)


def iter_batches(paths: Iterable[str], batch_size: int, filesystem: pafs.FileSystem | None = None,
                 feature_dim: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[Batch]:
    """Batches of exactly ``batch_size`` records (the last may be shorter) over a sequence of files."""
    per_file = (batch for path in paths
                for batch in iter_file_batches(path, batch_size, filesystem, feature_dim, chunk_bytes))
    return rebatch(per_file, batch_size)

"""MXNet/dmlc RecordIO framing: the "recordIO" of recordIO-protobuf.

A file is a sequence of ``magic:u32le | lrec:u32le | payload | zero pad to 4 bytes`` where
``lrec = cflag << 29 | length``. Writers escape every 4-byte-aligned occurrence of the magic inside
a payload by splitting the record into parts (cflag 1 = first, 2 = middle, 3 = last), exactly as
dmlc-core's ``RecordIOWriter`` does, so that a magic word only ever appears at a record head and a
file can be split at any aligned magic. Readers re-insert the magic between parts.

Two readers live here: :func:`iter_payloads` / :func:`iter_records` (one record at a time, the reference
behaviour; the latter also says where each record starts) and
:func:`scan_frames` (a whole buffer of records at once with numpy, used by the vectorized codecs).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
MAX_RECORD_LENGTH = LENGTH_MASK
_HEAD = struct.Struct("<II")
# What was found instead is not shown: errors travel to logs and job records, and a file that is not recordIO
# (a path mistaken for a shard) should not have its first bytes copied there.
_BAD_MAGIC = f"bad magic (not a record head: expected 0x{MAGIC:08X})"


class RecordIOError(ValueError):
    """A corrupt or truncated RecordIO stream. The message names the source and the byte offset."""

    def __init__(self, source: str, offset: int, problem: str):
        super().__init__(f"{source}: {problem} at byte offset {offset}")
        self.source = source
        self.offset = offset
        self.problem = problem


def padding(length: int) -> int:
    return -length & 3


def _part(cflag: int, data: bytes | memoryview) -> bytes:
    n = len(data)
    return _HEAD.pack(MAGIC, (cflag << 29) | n) + bytes(data) + b"\0" * padding(n)


def frame(payload: bytes | bytearray | memoryview) -> bytes:
    """One record framed as dmlc writes it, split into parts wherever the payload holds the magic."""
    n = len(payload)
    if n > MAX_RECORD_LENGTH:
        raise ValueError(f"record of {n} bytes exceeds the RecordIO limit of {MAX_RECORD_LENGTH} bytes")
    splits = magic_positions(payload)
    if not splits:
        return _HEAD.pack(MAGIC, n) + bytes(payload) + b"\0" * padding(n)
    view = memoryview(payload)
    parts = []
    begin = 0
    for i in splits:
        parts.append(_part(1 if begin == 0 else 2, view[begin:i]))
        begin = i + 4
    parts.append(_part(3, view[begin:]))
    return b"".join(parts)


def magic_positions(payload: bytes | bytearray | memoryview) -> list[int]:
    """Aligned offsets (below the payload's last whole word) where the payload holds the magic."""
    whole = len(payload) & ~3
    if whole == 0:
        return []
    words = np.frombuffer(payload, dtype="<u4", count=whole // 4)
    return [int(i) * 4 for i in np.flatnonzero(words == MAGIC)]


def write_records(out: BinaryIO, payloads: Iterable[bytes]) -> int:
    """Frame and write payloads; returns the number of bytes written."""
    written = 0
    for payload in payloads:
        data = frame(payload)
        out.write(data)
        written += len(data)
    return written


def iter_payloads(stream: BinaryIO, source: str = "<stream>") -> Iterator[bytes]:
    """Yield each record's payload, reassembling multi-part records. Reads only what it needs."""
    for _, payload in iter_records(stream, source):
        yield payload


def iter_records(stream: BinaryIO, source: str = "<stream>", offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(byte offset of the record's first head, payload)`` for each record, reassembling multi-part records.

    ``offset`` is where ``stream`` is positioned in its source (a reader that seeked into a file), so that
    offsets and error messages name positions in the file, as an ``.idx`` file does.
    """
    parts: list[bytes] = []
    part_start = 0
    while True:
        head = stream.read(8)
        if not head:
            if parts:
                raise RecordIOError(source, part_start, "stream ends inside a multi-part record")
            return
        if len(head) < 8:
            if parts:  # report the record, as scan_frames does, not the part that was cut
                raise RecordIOError(source, part_start, "stream ends inside a multi-part record")
            raise RecordIOError(source, offset, f"truncated record header ({len(head)} of 8 bytes)")
        magic, lrec = _HEAD.unpack(head)
        if magic != MAGIC:
            raise RecordIOError(source, offset, _BAD_MAGIC)
        cflag, length = lrec >> 29, lrec & LENGTH_MASK
        padded = length + padding(length)
        body = stream.read(padded)
        if len(body) < padded:
            if parts:
                raise RecordIOError(source, part_start, "stream ends inside a multi-part record")
            raise RecordIOError(source, offset, f"truncated record: header declares {length} bytes, "
                                f"{len(body)} remain")
        data = body[:length]
        if cflag == 0:
            if parts:
                raise RecordIOError(source, offset, "complete record inside a multi-part record")
            yield offset, data
        elif cflag == 1:
            if parts:
                raise RecordIOError(source, offset, "new multi-part record before the previous one ended")
            parts = [data]
            part_start = offset
        elif cflag in (2, 3):
            if not parts:
                raise RecordIOError(source, offset, f"continuation part (cflag={cflag}) without a first part")
            parts.append(data)
            if cflag == 3:
                yield part_start, MAGIC_BYTES.join(parts)
                parts = []
        else:
            raise RecordIOError(source, offset, f"invalid continuation flag {cflag}")
        offset += 8 + padded


@dataclass(frozen=True)
class Frames:
    """Payload locations of the complete records found in a buffer.

    ``data`` is the buffer the offsets point into: the input buffer itself, or a compacted copy
    when multi-part records had to be reassembled. ``consumed`` is how many input bytes the complete
    records span; the rest is the start of a record that continues past the buffer.
    """

    data: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    consumed: int

    def __len__(self) -> int:
        return len(self.starts)

    def payload(self, i: int) -> bytes:
        s = int(self.starts[i])
        return self.data[s : s + int(self.lengths[i])].tobytes()

    def uniform_stride(self) -> tuple[int, int] | None:
        """(payload size, distance between payloads) when every payload has the same size and spacing (then
        they are rows of a strided view: how dense writers lay records out), else None."""
        n, starts, lengths = len(self), self.starts, self.lengths
        size = int(lengths[0])
        if (lengths != size).any():
            return None
        stride = int(starts[1] - starts[0]) if n > 1 else size
        if n > 1 and (np.diff(starts) != stride).any():
            return None
        return size, stride


def as_uint8(buf: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        return buf.view(np.uint8).reshape(-1)
    return np.frombuffer(buf, dtype=np.uint8)


def scan_frames(buf, source: str = "<buffer>", base_offset: int = 0, final: bool = True) -> Frames:
    """Locate every record in ``buf`` with numpy, without a Python step per record.

    With ``final=False`` a record cut off by the end of the buffer is left for the next call
    (``consumed`` stops before it); with ``final=True`` it is an error naming its byte offset.
    ``base_offset`` is the buffer's position in the source, for error messages.
    """
    data = as_uint8(buf)
    size = len(data)
    empty = np.zeros(0, dtype=np.int64)
    if size == 0:
        return Frames(data, empty, empty, 0)
    words = data[: size & ~3].view("<u4")
    uniform = _scan_uniform(data, words, final)
    if uniform is not None:
        return uniform
    heads = np.flatnonzero(words == MAGIC).astype(np.int64)
    if len(heads) and heads[0] == 0:
        has_lrec = heads + 1 < len(words)
        lrec = np.zeros(len(heads), dtype=np.int64)
        lrec[has_lrec] = words[heads[has_lrec] + 1]
        lengths = lrec & LENGTH_MASK
        nxt = heads * 4 + 8 + ((lengths + 3) & ~3)
        if (
            np.all(lrec >> 29 == 0)
            and np.all(has_lrec[:-1])
            and np.array_equal(nxt[:-1], heads[1:] * 4)
        ):
            complete = has_lrec[-1] and nxt[-1] <= size
            last_end = int(nxt[-1]) if complete else int(heads[-1] * 4)
            if complete and last_end == size or not final:
                k = len(heads) if complete else len(heads) - 1
                consumed = last_end if complete else int(heads[-1] * 4)
                return Frames(data, heads[:k] * 4 + 8, lengths[:k], consumed)
    return _scan_sequential(data, source, base_offset, final)


def _scan_uniform(data: np.ndarray, words: np.ndarray, final: bool) -> Frames | None:
    """Records of one length back to back, as dense writers make them: check the heads only where the first
    record's length puts them (what a sequential walk does), not every word of the buffer."""
    if len(words) < 2 or words[0] != MAGIC or words[1] >> 29:
        return None
    length = int(words[1])
    stride = 8 + length + padding(length)
    count = len(data) // stride
    if count == 0:
        return None
    step = stride // 4
    heads = words[0 : count * step : step]
    if not ((heads == MAGIC).all() and (words[1 : count * step : step] == length).all()):
        return None
    consumed = count * stride
    if final and consumed != len(data):
        return None  # the walk reports what follows
    starts = np.arange(count, dtype=np.int64) * stride + 8
    return Frames(data, starts, np.full(count, length, np.int64), consumed)


def _scan_sequential(data: np.ndarray, source: str, base_offset: int, final: bool) -> Frames:
    """Record-by-record walk: for multi-part records and for unescaped payloads holding the magic."""
    size = len(data)
    raw = data.tobytes()
    records: list[tuple[int, int] | bytes] = []  # (start, length) in raw, or a reassembled payload
    parts: list[tuple[int, int]] = []
    first_part_at = 0
    offset = 0
    while offset + 8 <= size:
        magic, lrec = _HEAD.unpack_from(raw, offset)
        if magic != MAGIC:
            raise RecordIOError(source, base_offset + offset,
                                _BAD_MAGIC)
        cflag, length = lrec >> 29, lrec & LENGTH_MASK
        end = offset + 8 + length + padding(length)
        if end > size:
            break
        where = base_offset + offset
        if cflag == 0:
            if parts:
                raise RecordIOError(source, where, "complete record inside a multi-part record")
            records.append((offset + 8, length))
        elif cflag == 1:
            if parts:
                raise RecordIOError(source, where, "new multi-part record before the previous one ended")
            parts = [(offset + 8, length)]
            first_part_at = offset
        elif cflag in (2, 3):
            if not parts:
                raise RecordIOError(source, where, f"continuation part (cflag={cflag}) without a first part")
            parts.append((offset + 8, length))
            if cflag == 3:
                records.append(MAGIC_BYTES.join(raw[s : s + n] for s, n in parts))
                parts = []
        else:
            raise RecordIOError(source, where, f"invalid continuation flag {cflag}")
        offset = end
    consumed = first_part_at if parts else offset
    if final and consumed < size:
        if parts:
            raise RecordIOError(source, base_offset + first_part_at, "stream ends inside a multi-part record")
        if consumed + 8 > size:
            problem = f"truncated record header ({size - consumed} of 8 bytes)"
        else:
            _, lrec = _HEAD.unpack_from(raw, consumed)
            problem = (f"truncated record: header declares {lrec & LENGTH_MASK} bytes, "
                       f"{size - consumed - 8} remain")
        raise RecordIOError(source, base_offset + consumed, problem)
    if all(isinstance(r, tuple) for r in records):
        starts = np.array([r[0] for r in records], np.int64)
        lengths = np.array([r[1] for r in records], np.int64)
        return Frames(data, starts, lengths, consumed)
    # Multi-part records: compact every payload into a new buffer so each one is contiguous.
    chunks = [raw[r[0] : r[0] + r[1]] if isinstance(r, tuple) else r for r in records]
    lengths = np.array([len(c) for c in chunks], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return Frames(np.frombuffer(b"".join(chunks), dtype=np.uint8), starts, lengths, consumed)

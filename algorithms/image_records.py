"""MXNet image RecordIO: ``.rec`` files of IRHeader-prefixed JPEG/PNG records, with an optional ``.idx``.

A record's payload is MXNet's ``recordio.pack`` layout: the 24-byte ``IRHeader`` (struct ``<IfQQ``: ``flag``,
``label``, ``id``, ``id2``), then ``flag`` float32 labels when ``flag > 0`` (multi-label; the header's
``label`` is then 0), then the encoded image. Records are framed by :mod:`algorithms.recordio` (dmlc framing,
escaped like MXNet's writer), and an ``.idx`` file holds ``key<TAB>byte offset`` per record, as
``MXIndexedRecordIO`` writes it, so files move between this module, ``im2rec`` and SageMaker in both directions.

Reading streams one record at a time (memory: one record plus a read buffer), over whole files or byte ranges
of them: a range holds the records whose first head lies inside it, the rule dmlc's input splits use, so the
ranges of a file partition its records whatever the cut points. :func:`split_record_files` cuts a set of files
into per-worker parts: balanced by record count when every file has an ``.idx``, by bytes otherwise.
"""

from __future__ import annotations

import numbers
import os
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from . import fs as fsutil
from .recordio import MAGIC, RecordIOError, frame, iter_records

IR_HEADER = struct.Struct("<IfQQ")  # MXNet's 'IfQQ' with native alignment: no padding, 24 bytes
IR_HEADER_SIZE = IR_HEADER.size
INDEX_SUFFIX = ".idx"
READ_BUFFER_BYTES = 1 << 20
_UINT64_MAX = (1 << 64) - 1
_F32 = struct.Struct("<f")


class ImageRecordError(ValueError):
    """A record whose payload is not an image record, or a bad ``.idx`` line. Names the file and the position."""


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image record. ``label`` is a float (a header with ``flag == 0``) or a 1-D float32 array (multi-label,
    ``flag`` = its length), exactly as MXNet's ``unpack`` returns it. ``source`` says where the record came
    from (file and byte offset, or ``.lst`` line) for error messages; it takes no part in equality."""

    label: float | np.ndarray
    image: bytes
    id: int = 0
    id2: int = 0
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Labels are float32 on disk: keep them at that precision, so a record reads back equal to itself.
        where = self.source or "image record"
        if isinstance(self.label, numbers.Number):
            try:
                object.__setattr__(self, "label", _F32.unpack(_F32.pack(float(self.label)))[0])
            except OverflowError:
                raise ValueError(f"{where}: label {self.label!r} does not fit a float32") from None
        else:
            wide = np.array(self.label, dtype=np.float64).reshape(-1)
            if wide.size == 0:
                raise ValueError(f"{where}: an empty label array cannot be stored (MXNet would write flag 0 and "
                                 "label 0)")
            with np.errstate(over="ignore"):
                labels = wide.astype(np.float32)
            if (np.isinf(labels) & ~np.isinf(wide)).any():
                raise ValueError(f"{where}: label {wide.tolist()} does not fit a float32")
            labels.flags.writeable = False
            object.__setattr__(self, "label", labels)
        for name in ("id", "id2"):
            value = getattr(self, name)
            if type(value) is not int:
                if not isinstance(value, numbers.Integral):
                    raise ValueError(f"{where}: {name} must be an integer in [0, 2**64), got {value!r}")
                value = int(value)
                object.__setattr__(self, name, value)
            if not 0 <= value <= _UINT64_MAX:
                raise ValueError(f"{where}: {name} must be an integer in [0, 2**64), got {value!r}")

    @property
    def flag(self) -> int:
        """The header's ``flag``: how many float32 labels follow the header (0 for a scalar label)."""
        return 0 if isinstance(self.label, float) else int(self.label.size)

    @property
    def labels(self) -> np.ndarray:
        """The label(s) as a 1-D float32 array, whichever way they are stored."""
        if isinstance(self.label, float):
            return np.array([self.label], dtype=np.float32)
        return self.label

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageRecord):
            return NotImplemented
        return (self.id == other.id and self.id2 == other.id2 and self.image == other.image
                and self.flag == other.flag and np.array_equal(self.labels, other.labels))

    __hash__ = None  # mutable-looking array field: not hashable, like a dict

    def __repr__(self) -> str:
        label = self.label if isinstance(self.label, float) else self.label.tolist()
        where = f", source={self.source!r}" if self.source else ""
        return f"ImageRecord(id={self.id}, label={label}, image=<{len(self.image)} bytes>{where})"


def pack(record: ImageRecord) -> bytes:
    """The record's payload, byte for byte what ``mx.recordio.pack(IRHeader(0, label, id, id2), image)`` gives."""
    if record.flag == 0:
        return IR_HEADER.pack(0, record.label, record.id, record.id2) + record.image
    labels = record.label
    return IR_HEADER.pack(labels.size, 0.0, record.id, record.id2) + labels.astype("<f4").tobytes() + record.image


def unpack(payload: bytes, source: str = "<record>", offset: int | None = None) -> ImageRecord:
    """The inverse of :func:`pack` (MXNet's ``unpack``). ``offset`` is the record's position, for errors."""
    where = source if offset is None else f"{source} (record at byte offset {offset})"
    n = len(payload)
    if n < IR_HEADER_SIZE:
        raise ImageRecordError(f"{where}: a record of {n} bytes is shorter than the {IR_HEADER_SIZE}-byte "
                               "image record header (IRHeader): not an MXNet image .rec file?")
    flag, label, id_, id2 = IR_HEADER.unpack_from(payload)
    if flag == 0:
        return ImageRecord(label, bytes(payload[IR_HEADER_SIZE:]), id_, id2, where)
    end = IR_HEADER_SIZE + 4 * flag
    if end > n:
        raise ImageRecordError(f"{where}: the header declares {flag} float32 labels ({4 * flag} bytes) but only "
                               f"{n - IR_HEADER_SIZE} bytes follow it: not an MXNet image .rec file?")
    labels = np.frombuffer(payload, dtype="<f4", count=flag, offset=IR_HEADER_SIZE).astype(np.float32)
    return ImageRecord(labels, bytes(payload[end:]), id_, id2, where)


def index_path_for(rec_path: str) -> str:
    """``x.rec`` -> ``x.idx``, the name ``im2rec`` gives the index of a record file."""
    return os.path.splitext(rec_path)[0] + INDEX_SUFFIX


class ImageRecordWriter:
    """Writes a ``.rec`` (and an ``.idx`` when given one) as ``MXIndexedRecordIO`` does, atomically.

    Records go to temporary files next to the targets, which are renamed over them by :meth:`close`; leaving a
    ``with`` block by an exception deletes them instead, so a reader never sees half a file.
    """

    def __init__(self, rec_path: str, idx_path: str | None = None, filesystem: pafs.FileSystem | None = None):
        self._fs, self._rec = fsutil.resolve(rec_path, filesystem)
        self._idx = fsutil.resolve(idx_path, self._fs if filesystem else None)[1] if idx_path else None
        self._name = rec_path
        token = uuid.uuid4().hex
        self._tmp = [f"{self._rec}.{token}.tmp"] + ([f"{self._idx}.{token}.tmp"] if self._idx else [])
        self._rec_out = self._open(self._tmp[0])
        self._idx_out = self._open(self._tmp[1]) if self._idx else None
        self._pos = 0
        self.count = 0
        self._closed = False

    def _open(self, path: str):
        parent = os.path.dirname(path) if fsutil.is_local(self._fs) else path.rsplit("/", 1)[0]
        self._fs.create_dir(parent, recursive=True)
        return self._fs.open_output_stream(path)

    def tell(self) -> int:
        """Byte offset where the next record will start (what ``MXIndexedRecordIO.tell`` answers)."""
        return self._pos

    def write(self, record: ImageRecord, key: int | str | None = None) -> int:
        """Append one record; its ``.idx`` key is ``key`` or else the record's ``id``. Returns its offset."""
        return self.write_payload(pack(record), record.id if key is None else key)

    def write_payload(self, payload: bytes, key: int | str | None = None) -> int:
        """Append an already packed payload (what ``MXIndexedRecordIO.write_idx(key, payload)`` does)."""
        if self._closed:
            raise ValueError(f"{self._name}: writer is closed")
        text = str(key)
        if self._idx_out is not None and (key is None or not text or text != text.strip() or "\t" in text
                                          or "\n" in text):
            raise ValueError(f"{self._name}: index key {key!r} cannot be written to an .idx line")
        at = self._pos
        data = frame(payload)
        self._rec_out.write(data)
        self._pos += len(data)
        if self._idx_out is not None:
            self._idx_out.write(f"{text}\t{at}\n".encode())
        self.count += 1
        return at

    def close(self) -> None:
        """Finish both files and move them into place (the ``.rec`` first, then its index)."""
        if self._closed:
            return
        self._closed = True
        self._rec_out.close()
        if self._idx_out is not None:
            self._idx_out.close()
        try:
            self._fs.move(self._tmp[0], self._rec)
            if self._idx:
                self._fs.move(self._tmp[1], self._idx)
        except Exception:
            self._delete_temporaries()
            raise

    def abort(self) -> None:
        """Drop everything written: the targets are left as they were."""
        if self._closed:
            return
        self._closed = True
        self._rec_out.close()
        if self._idx_out is not None:
            self._idx_out.close()
        self._delete_temporaries()

    def _delete_temporaries(self) -> None:
        for tmp in self._tmp:
            if fsutil.exists(self._fs, tmp):
                self._fs.delete_file(tmp)

    def __enter__(self) -> ImageRecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_image_records(rec_path: str, records: Iterable[ImageRecord], idx_path: str | None = None,
                        filesystem: pafs.FileSystem | None = None) -> int:
    """Write records (keys = their ids) to ``rec_path`` and optionally an index; returns how many."""
    with ImageRecordWriter(rec_path, idx_path, filesystem) as writer:
        for record in records:
            writer.write(record)
        return writer.count


def read_index(idx_path: str, filesystem: pafs.FileSystem | None = None,
               key_type: type = int) -> tuple[list, np.ndarray]:
    """(keys, byte offsets) of an ``.idx`` file, in file order. ``key_type`` as in ``MXIndexedRecordIO``."""
    fs, inner = fsutil.resolve(idx_path, filesystem)
    keys: list = []
    offsets: list[int] = []
    text = fsutil.read_bytes(fs, inner).decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        try:
            if len(fields) != 2:
                raise ValueError(f"expected key<TAB>offset, found {len(fields)} field(s)")
            key, offset = key_type(fields[0]), int(fields[1])
            if offset < 0 or offset % 4:
                raise ValueError(f"offset {offset} is not a record position (records start 4-byte aligned)")
        except ValueError as exc:
            raise ImageRecordError(f"{idx_path} line {number}: {exc}: {line[:80]!r}") from None
        keys.append(key)
        offsets.append(offset)
    return keys, np.array(offsets, dtype=np.int64)


class ImageRecordFile:
    """One ``.rec`` file with its optional ``.idx``: random access by key, and streaming over byte ranges.

    The index is read once (keys and offsets only); records are read on demand, one at a time.
    """

    def __init__(self, rec_path: str, idx_path: str | None = None, filesystem: pafs.FileSystem | None = None,
                 key_type: type = int):
        self.path = rec_path
        self._fs, self._inner = fsutil.resolve(rec_path, filesystem)
        info = self._fs.get_file_info(self._inner)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"image record file {rec_path} does not exist")
        self.size = info.size
        self.idx_path = idx_path
        self.keys: list = []
        self._offsets: dict = {}
        if idx_path is not None:
            keys, offsets = read_index(idx_path, self._fs if filesystem else None, key_type)
            bad = offsets >= self.size
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ImageRecordError(f"{idx_path}: key {keys[i]} points at byte offset {offsets[i]}, past the "
                                       f"end of {rec_path} ({self.size} bytes)")
            self.keys = keys
            self._offsets = dict(zip(keys, offsets.tolist(), strict=True))
        self._file = None

    @classmethod
    def open(cls, rec_path: str, filesystem: pafs.FileSystem | None = None, key_type: type = int) -> ImageRecordFile:
        """The file with its sibling ``.idx`` when there is one (``im2rec``'s naming)."""
        idx = index_path_for(rec_path)
        fs, inner = fsutil.resolve(idx, filesystem)
        return cls(rec_path, idx if fsutil.exists(fs, inner) else None, filesystem, key_type)

    def __len__(self) -> int:
        self._need_index()
        return len(self.keys)

    def offset_of(self, key) -> int:
        self._need_index()
        try:
            return self._offsets[key]
        except KeyError:
            raise KeyError(f"{self.idx_path}: no record with key {key!r}") from None

    def read(self, key) -> ImageRecord:
        """The record stored under ``key`` in the index (``MXIndexedRecordIO.read_idx`` + ``unpack``)."""
        return self.read_at(self.offset_of(key))

    def read_at(self, offset: int) -> ImageRecord:
        """The record whose first head is at byte ``offset``."""
        if self._file is None:
            self._file = self._fs.open_input_file(self._inner)
        self._file.seek(offset)
        for at, payload in iter_records(self._file, self.path, offset):
            return unpack(payload, self.path, at)
        raise RecordIOError(self.path, offset, "no record (end of file)")

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter_image_records(self._inner, filesystem=self._fs)

    def _need_index(self) -> None:
        if self.idx_path is None:
            raise ValueError(f"{self.path} was opened without an .idx file: random access needs one")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ImageRecordFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_image_records(path: str, begin: int = 0, end: int | None = None,
                       filesystem: pafs.FileSystem | None = None,
                       buffer_bytes: int = READ_BUFFER_BYTES) -> Iterator[ImageRecord]:
    """Stream the records of ``path`` whose first head lies in ``[begin, end)`` (the whole file by default).

    ``begin`` need not be a record boundary: reading starts at the first record head at or after it (an
    aligned magic word followed by a first or complete part). Memory stays at one record plus the buffer.
    """
    for offset, payload in _iter_payloads(path, begin, end, filesystem, buffer_bytes):
        yield unpack(payload, path, offset)


def _iter_payloads(path: str, begin: int, end: int | None, filesystem: pafs.FileSystem | None,
                   buffer_bytes: int) -> Iterator[tuple[int, bytes]]:
    fs, inner = fsutil.resolve(path, filesystem)
    with fs.open_input_file(inner) as raw:
        size = raw.size()
        stop = size if end is None else min(end, size)
        start = _next_head(raw, begin, size, path)
        if start >= stop:
            return
        raw.seek(start)
        stream = pa.BufferedInputStream(raw, buffer_bytes) if buffer_bytes > 0 else raw
        for offset, payload in iter_records(stream, path, start):
            if offset >= stop:
                return
            yield offset, payload


def _next_head(f, begin: int, size: int, source: str, block: int = 1 << 16) -> int:
    """Offset of the first record head at or after ``begin`` (``size`` when there is none)."""
    pos = max(0, begin + (-begin & 3))
    while pos + 8 <= size:
        f.seek(pos)
        data = f.read(min(block + 4, size - pos))  # 4 more bytes: a head's length word may cross the block end
        words = np.frombuffer(data, dtype="<u4", count=len(data) // 4)
        if len(words) < 2:
            break
        heads = np.flatnonzero((words[:-1] == MAGIC) & ((words[1:] >> 29) <= 1))
        if len(heads):
            return pos + 4 * int(heads[0])
        pos += 4 * (len(words) - 1)
    return size


@dataclass(frozen=True)
class RecordRange:
    """Part of one ``.rec`` file: the records whose first head lies in ``[begin, end)``. ``records`` is their
    count when an index told it, else None."""

    path: str
    begin: int
    end: int
    records: int | None = None


def split_record_files(paths: Sequence[str], num_parts: int, filesystem: pafs.FileSystem | None = None,
                       use_index: bool = True) -> list[list[RecordRange]]:
    """Cut the records of ``paths`` (in order) into ``num_parts`` contiguous parts, one per worker.

    When every file has a sibling ``.idx`` (and ``use_index``), parts differ by at most one record, which
    data-parallel training needs to run the same number of steps everywhere. Otherwise the files' bytes are cut
    evenly, as dmlc's input splits do, and record counts are unknown until read.
    """
    if num_parts < 1:
        raise ValueError(f"num_parts must be at least 1, got {num_parts}")
    files = [ImageRecordFile.open(p, filesystem) if use_index else ImageRecordFile(p, None, filesystem)
             for p in paths]
    parts: list[list[RecordRange]] = [[] for _ in range(num_parts)]
    if files and all(f.idx_path is not None for f in files):
        offsets = [np.unique(np.fromiter(f._offsets.values(), np.int64, len(f._offsets))) for f in files]
        total = sum(len(o) for o in offsets)
        first = 0  # global index of the file's first record
        for f, offs in zip(files, offsets, strict=True):
            n = len(offs)
            for p in range(num_parts):
                lo, hi = max(p * total // num_parts - first, 0), min((p + 1) * total // num_parts - first, n)
                if lo < hi:
                    end = int(offs[hi]) if hi < n else f.size
                    parts[p].append(RecordRange(f.path, int(offs[lo]), end, hi - lo))
            first += n
        return parts
    total = sum(f.size for f in files)
    first = 0  # global byte position of the file's first byte
    for f in files:
        for p in range(num_parts):
            lo = max(p * total // num_parts - first, 0)
            hi = min((p + 1) * total // num_parts - first, f.size)
            if lo < hi:
                parts[p].append(RecordRange(f.path, lo, hi))
        first += f.size
    return parts


def iter_ranges(ranges: Iterable[RecordRange], filesystem: pafs.FileSystem | None = None) -> Iterator[ImageRecord]:
    """The records of several ranges (a worker's part), file after file, streaming."""
    for r in ranges:
        yield from iter_image_records(r.path, r.begin, r.end, filesystem)


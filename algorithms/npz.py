"""Reading ``.npz`` archives someone else may have crafted: every size is checked before a byte is inflated.

``np.load`` trusts an archive. A 5 MB member that deflates to 5 GiB of zeros, or a header declaring a shape
far larger than the data behind it, makes it allocate and inflate whatever the file says (a crafted model
peaked at 15.5 GB of RAM and took 47 s to load before this reader). Here the archive is read in two passes:
first each member's ``.npy`` header (a few hundred bytes inflated at most), whose dtype and shape are checked
against the member's size in the zip directory, an :class:`ArrayBudget` and the shapes the caller expects;
only when every array passes is any data read, straight into an array of exactly the declared size.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MAX_BYTES_ENV = "SPARK_ML_MAX_ARRAY_BYTES"
DEFAULT_MAX_BYTES = 16 << 30
_READ_CHUNK = 16 << 20  # ZipExtFile.readinto reads into a temporary of the request's size: keep it small


class NpzError(ValueError):
    """An archive that is not a set of plain numeric arrays within budget. The message names the archive."""


@dataclass(frozen=True)
class ArrayBudget:
    """How many bytes of arrays an archive may declare.

    ``max_bytes`` caps the total whatever the archive (default ``$SPARK_ML_MAX_ARRAY_BYTES``, else 16 GiB).
    ``max_expansion`` caps it relative to the archive's own size: this library stores arrays uncompressed
    (about 1 byte of array per byte of file) and deflated real weights shrink little, so 16x leaves room for
    other writers while a bomb (1000x) is refused. Archives may always declare ``floor_bytes`` (small
    archives of mostly zeros stay loadable).
    """

    max_bytes: int | None = None
    max_expansion: float = 16.0
    floor_bytes: int = 64 << 20
    max_members: int = 10_000
    max_header_bytes: int = 10_000

    def limit(self, archive_bytes: int) -> tuple[int, str]:
        """(bytes the archive may declare, why that many) for an archive of ``archive_bytes``."""
        if self.max_bytes is not None:
            absolute, why = int(self.max_bytes), "ArrayBudget.max_bytes"
        elif os.environ.get(MAX_BYTES_ENV):
            raw = os.environ[MAX_BYTES_ENV]
            try:
                absolute, why = int(raw), MAX_BYTES_ENV
            except ValueError:
                raise NpzError(f"{MAX_BYTES_ENV}={raw!r} is not a number of bytes") from None
        else:
            absolute, why = DEFAULT_MAX_BYTES, f"the default; set {MAX_BYTES_ENV} to change it"
        relative = max(self.floor_bytes, int(archive_bytes * self.max_expansion))
        if relative < absolute:
            return relative, (f"{self.max_expansion:g} x the archive's {archive_bytes} bytes, "
                              f"at least {self.floor_bytes}")
        return absolute, why


Shape = Sequence[int | None]


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    key: str
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    nbytes: int
    header_bytes: int


def read_npz(path: str, *, budget: ArrayBudget | None = None, expected: Mapping[str, Shape] | None = None,
             source: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, never unpickling, never inflating more than the checks allow.

    ``expected`` maps array names to the shapes the caller knows from elsewhere (the model's manifest:
    ``feature_dim``, ``k``…); ``None`` in a shape matches any length. A named array must be present and match
    before any data is read. Raises :class:`NpzError` naming the archive and the array at fault.
    """
    budget = budget or ArrayBudget()
    name = source or path
    try:
        info = os.stat(path)
    except OSError as exc:
        raise NpzError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise NpzError(f"{name}: not a regular file")
    limit, why = budget.limit(info.st_size)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _read_headers(archive, name, budget)
            _check(members, name, limit, why, expected)
            return {m.key: _read_data(archive, m, name) for m in members}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise NpzError(f"{name}: not a readable .npz archive: {exc}") from None


def _read_headers(archive: zipfile.ZipFile, name: str, budget: ArrayBudget) -> list[_Member]:
    infos = archive.infolist()
    if len(infos) > budget.max_members:
        raise NpzError(f"{name}: {len(infos)} members; at most {budget.max_members} arrays are read")
    members, seen = [], set()
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise NpzError(f"{name}: member {info.filename!r} is not an .npy array")
        key = info.filename[: -len(".npy")]
        if key in seen:
            raise NpzError(f"{name}: array {key!r} appears twice")
        seen.add(key)
        with archive.open(info) as raw:
            f = _Counting(raw)
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, budget.max_header_bytes)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, budget.max_header_bytes)
                else:
                    raise ValueError(f"npy format version {version[0]}.{version[1]} is not read (1.0 and 2.0 are)")
            except ValueError as exc:
                raise NpzError(f"{name}: array {key!r} has no valid .npy header: {exc}") from None
        if dtype.hasobject:
            raise NpzError(f"{name}: array {key!r} holds Python objects (dtype {dtype}); artifacts are read with "
                           "allow_pickle=False")
        if any(d < 0 for d in shape):
            raise NpzError(f"{name}: array {key!r} declares a negative shape {shape}")
        count = 1
        for d in shape:
            count *= d
        members.append(_Member(info, key, dtype, tuple(shape), bool(fortran), count * dtype.itemsize, f.count))
    return members


def _check(members: list[_Member], name: str, limit: int, why: str, expected: Mapping[str, Shape] | None) -> None:
    total = 0
    for m in members:
        total += m.nbytes
        declared = f"array {m.key!r} declares shape {m.shape} {m.dtype} ({m.nbytes} bytes)"
        if m.header_bytes + m.nbytes != m.info.file_size:
            raise NpzError(f"{name}: {declared} but its member holds {m.info.file_size - m.header_bytes} bytes "
                           "of data")
        if total > limit:
            before = f", {total} bytes with the arrays before it" if total != m.nbytes else ""
            raise NpzError(f"{name}: {declared}{before}; the limit is {limit} bytes ({why})")
    if expected:
        shapes = {m.key: m.shape for m in members}
        for key, want in expected.items():
            if key not in shapes:
                raise NpzError(f"{name} has no array {key!r} (it holds {', '.join(sorted(shapes)) or 'none'})")
            got = shapes[key]
            if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want, strict=True)):
                shown = tuple("*" if w is None else w for w in want)
                raise NpzError(f"{name}: array {key!r} has shape {got}; the model expects {shown}".replace("'*'", "*"))


def _read_data(archive: zipfile.ZipFile, m: _Member, name: str) -> np.ndarray:
    if m.dtype.itemsize == 0 or m.nbytes == 0:
        return np.empty(m.shape, m.dtype, order="F" if m.fortran else "C")
    buf = np.empty(m.nbytes, np.uint8)
    view = memoryview(buf)
    with archive.open(m.info) as f:
        f.read(m.header_bytes)
        got = 0
        while got < m.nbytes:
            n = f.readinto(view[got : min(got + _READ_CHUNK, m.nbytes)])
            if not n:
                raise NpzError(f"{name}: array {m.key!r} ends after {got} of its {m.nbytes} bytes")
            got += n
        f.read(1)  # reach the end of the member: zipfile checks its CRC there
    flat = buf.view(m.dtype)
    if m.fortran:
        return flat.reshape(m.shape[::-1]).transpose()
    return flat.reshape(m.shape)


class _Counting:
    """A file wrapper counting the bytes read (the header's length, for the data's offset and size check)."""

    def __init__(self, f):
        self.f = f
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.count += len(data)
        return data

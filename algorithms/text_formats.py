"""Text channels: ``text/csv`` and ``text/libsvm`` files streamed as Batches with bounded memory.

SageMaker's conventions: no header; the label is the first CSV column (``text/csv;label_size=0`` for
files without one); libsvm rows are ``<label>[:<weight>] [qid:<id>] <index>:<value> ...`` with zero-based
indices and an optional ``# comment``. CSV is dense (an empty field is a missing value, NaN); libsvm is
sparse (CSR; an absent index is missing, an explicit ``i:0`` is a zero).

Both parsers work on whole blocks in pyarrow's C++ kernels (no Python step per row or token). When a
block fails to parse, the block is parsed again line by line, only to name the file and line at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import scipy.sparse as sp

from . import fs as fsutil
from .batch import Batch
from .channel import CSV, LIBSVM, base_content_type, content_type_params

LIBSVM_TYPES = (LIBSVM, "text/x-libsvm")
CSV_TYPES = (CSV,)
DEFAULT_BLOCK_BYTES = 8 << 20


class TextFormatError(ValueError):
    """A text channel file that does not parse; names the file and the line."""


def is_text(content_type: str) -> bool:
    return base_content_type(content_type) in LIBSVM_TYPES + CSV_TYPES


def csv_label_size(content_type: str) -> int:
    """``label_size`` of a CSV content type: 1 (the default, label in the first column) or 0 (no label)."""
    raw = content_type_params(content_type).get("label_size", "1")
    if raw not in ("0", "1"):
        raise TextFormatError(f"content type {content_type!r}: label_size must be 0 or 1, got {raw!r}")
    return int(raw)


def iter_text_batches(files: Iterable[str], content_type: str, batch_size: int, feature_dim: int | None = None,
                      filesystem: pafs.FileSystem | None = None,
                      block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[Batch]:
    """Batches of exactly ``batch_size`` rows (the last may be shorter) over CSV or libsvm files.

    Without ``feature_dim`` a libsvm stream first scans its files for the largest index (one extra pass);
    a CSV stream takes its width from the first row.
    """
    from .reader import rebatch

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    files = list(files)
    ctype = base_content_type(content_type)
    if ctype in LIBSVM_TYPES and feature_dim is None:
        feature_dim = text_feature_dim(files, content_type, filesystem)
    per_file = (batch for path in files
                for batch in iter_text_file_batches(path, content_type, feature_dim, filesystem, block_bytes))
    return rebatch(per_file, batch_size)


def iter_text_file_batches(path: str, content_type: str, feature_dim: int | None = None,
                           filesystem: pafs.FileSystem | None = None,
                           block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[Batch]:
    """One file's rows, a block (about ``block_bytes``) at a time."""
    ctype = base_content_type(content_type)
    if ctype in LIBSVM_TYPES:
        return _libsvm_file(path, feature_dim, filesystem, block_bytes)
    if ctype in CSV_TYPES:
        return _csv_file(path, csv_label_size(content_type), feature_dim, filesystem, block_bytes)
    raise TextFormatError(f"{path}: content type {content_type!r} is not a text format (text/csv, text/libsvm)")


def text_feature_dim(files: Iterable[str], content_type: str, filesystem: pafs.FileSystem | None = None,
                     block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """The number of features in text files: CSV from the first row, libsvm from the largest index (a pass)."""
    ctype = base_content_type(content_type)
    files = list(files)
    if ctype in CSV_TYPES:
        label_size = csv_label_size(content_type)
        for path in files:
            width = _csv_width(path, filesystem)
            if width is not None:
                return width - label_size
        return 0
    if ctype not in LIBSVM_TYPES:
        raise TextFormatError(f"content type {content_type!r} is not a text format (text/csv, text/libsvm)")
    largest = -1
    for path in files:
        for text, first_line in _text_blocks(path, filesystem, block_bytes):
            rows = _libsvm_rows(text, first_line, path)
            if rows is not None and len(rows.indices):
                largest = max(largest, int(rows.indices.max()))
    return largest + 1


# ------------------------------------------------------------------------------------------------ blocks


def _text_blocks(path: str, filesystem: pafs.FileSystem | None, block_bytes: int) -> Iterator[tuple[str, int]]:
    """(text of whole lines, 1-based number of its first line), about ``block_bytes`` at a time."""
    fs, inner = fsutil.resolve(path, filesystem)
    line = 1
    with fs.open_input_stream(inner) as stream:
        pending = b""
        while True:
            chunk = stream.read(block_bytes)
            data = pending + chunk if pending else chunk
            if not chunk:
                if data:
                    yield _decode(data, path, line), line
                return
            cut = data.rfind(b"\n")
            if cut < 0:
                pending = data
                continue
            block, pending = data[: cut + 1], data[cut + 1 :]
            yield _decode(block, path, line), line
            line += block.count(b"\n")


def _decode(data: bytes, path: str, first_line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = first_line + data[: exc.start].count(b"\n")
        raise TextFormatError(f"{path}: line {at}: not UTF-8 text (byte {data[exc.start]:#04x})") from None


# ------------------------------------------------------------------------------------------------ libsvm


class _LibsvmRows:
    def __init__(self, labels, weights, qid, indptr, indices, values):
        self.labels, self.weights, self.qid = labels, weights, qid
        self.indptr, self.indices, self.values = indptr, indices, values


_LINE_SPLIT = re.compile(r"\r?\n")


def _libsvm_rows(text: str, first_line: int, path: str) -> _LibsvmRows | None:
    """Parse a block of whole lines; None when it holds no rows."""
    lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten()
    if "#" in text:
        lines = pc.replace_substring_regex(lines, "#.*", "")
    lines = pc.utf8_trim_whitespace(lines)
    numbers = np.arange(first_line, first_line + len(lines))
    keep = pc.greater(pc.utf8_length(lines), 0)
    if not pc.any(keep).as_py():
        return None
    keep_np = keep.to_numpy(zero_copy_only=False)
    lines, numbers = lines.filter(keep), numbers[keep_np]
    try:
        return _parse_libsvm_lines(lines)
    except (pa.ArrowInvalid, ValueError):
        _raise_libsvm_error(lines, numbers, path)
        raise


def _parse_libsvm_lines(lines: pa.Array) -> _LibsvmRows:
    tokens = pc.utf8_split_whitespace(lines)
    offsets = tokens.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]
    flat = tokens.flatten()
    n = len(lines)
    heads = offsets[:-1]
    head_tokens = flat.take(pa.array(heads))
    head_parts = pc.split_pattern(head_tokens, ":", max_splits=1)
    head_counts = pc.list_value_length(head_parts).to_numpy(zero_copy_only=False)
    head_flat = head_parts.flatten()
    head_starts = np.concatenate([[0], np.cumsum(head_counts)[:-1]]).astype(np.int64)
    labels = pc.cast(head_flat.take(pa.array(head_starts)), pa.float32()).to_numpy(zero_copy_only=False)
    weights = None
    if (head_counts == 2).any():
        weights = np.ones(n, np.float32)
        with_weight = np.flatnonzero(head_counts == 2)
        weights[with_weight] = pc.cast(head_flat.take(pa.array(head_starts[with_weight] + 1)),
                                       pa.float32()).to_numpy(zero_copy_only=False)
    is_head = np.zeros(len(flat), bool)
    is_head[heads] = True
    rest = flat.filter(pa.array(~is_head))
    row_of = np.repeat(np.arange(n), np.diff(offsets) - 1)
    pairs = pc.split_pattern(rest, ":", max_splits=1)
    if len(rest) and (pc.list_value_length(pairs).to_numpy(zero_copy_only=False) != 2).any():
        raise ValueError("a feature token is not index:value")
    pair_values = pairs.flatten()
    keys = pair_values.take(pa.array(np.arange(0, 2 * len(rest), 2)))
    vals = pair_values.take(pa.array(np.arange(1, 2 * len(rest), 2)))
    is_qid = pc.equal(keys, "qid").to_numpy(zero_copy_only=False) if len(rest) else np.zeros(0, bool)
    qid = None
    if is_qid.any():
        qid_rows = row_of[is_qid]
        if len(np.unique(qid_rows)) != n or len(qid_rows) != n:
            raise ValueError("qid must be given once on every row, or on none")
        qid = np.empty(n, np.int64)
        qid[qid_rows] = pc.cast(vals.filter(pa.array(is_qid)), pa.int64()).to_numpy(zero_copy_only=False)
        keys, vals, row_of = keys.filter(pa.array(~is_qid)), vals.filter(pa.array(~is_qid)), row_of[~is_qid]
    indices = pc.cast(keys, pa.int64()).to_numpy(zero_copy_only=False)
    values = pc.cast(vals, pa.float32()).to_numpy(zero_copy_only=False)
    if len(indices) and indices.min() < 0:
        raise ValueError("negative feature index")
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(row_of, minlength=n), out=indptr[1:])
    return _LibsvmRows(labels, weights, qid, indptr, indices, values)


def _raise_libsvm_error(lines: pa.Array, numbers: np.ndarray, path: str) -> None:
    """The block failed to parse as a whole: find and name the first bad line (slow path, errors only)."""
    has_qid: bool | None = None
    for text, number in zip(lines.to_pylist(), numbers.tolist(), strict=True):
        tokens = text.split()
        head = tokens[0].split(":", 1)
        try:
            float(head[0])
        except ValueError:
            raise TextFormatError(f"{path}: line {number}: the label {head[0]!r} is not a number") from None
        if len(head) == 2:
            try:
                float(head[1])
            except ValueError:
                raise TextFormatError(f"{path}: line {number}: the weight {head[1]!r} is not a number") from None
        row_qid = False
        for token in tokens[1:]:
            key, sep, value = token.partition(":")
            if not sep:
                raise TextFormatError(f"{path}: line {number}: {token!r} is not index:value")
            if key == "qid":
                if row_qid:
                    raise TextFormatError(f"{path}: line {number}: qid is given twice")
                row_qid = True
                if not re.fullmatch(r"[+-]?\d+", value):
                    raise TextFormatError(f"{path}: line {number}: qid {value!r} is not an integer")
                continue
            if not re.fullmatch(r"\+?\d+", key):
                raise TextFormatError(f"{path}: line {number}: feature index {key!r} is not a non-negative "
                                      "integer")
            try:
                float(value)
            except ValueError:
                raise TextFormatError(f"{path}: line {number}: value {value!r} of feature {key} is not a "
                                      "number") from None
        if has_qid is None:
            has_qid = row_qid
        elif has_qid != row_qid:
            raise TextFormatError(f"{path}: line {number}: qid must be given on every row or on none")


def _libsvm_file(path: str, feature_dim: int | None, filesystem, block_bytes: int) -> Iterator[Batch]:
    for text, first_line in _text_blocks(path, filesystem, block_bytes):
        rows = _libsvm_rows(text, first_line, path)
        if rows is None:
            continue
        n = len(rows.labels)
        width = feature_dim if feature_dim is not None else (int(rows.indices.max()) + 1 if len(rows.indices) else 0)
        if len(rows.indices) and rows.indices.max() >= width:
            bad_row = int(np.searchsorted(rows.indptr, int(np.argmax(rows.indices >= width)), side="right")) - 1
            raise TextFormatError(f"{path}: line {_line_of_row(text, bad_row, first_line)}: feature index "
                                  f"{int(rows.indices[rows.indices >= width][0])} is out of range for "
                                  f"feature_dim={width} (indices are zero-based)")
        features = sp.csr_matrix((rows.values, rows.indices.astype(np.int32), rows.indptr), shape=(n, width))
        if not features.has_sorted_indices:
            features.sort_indices()
        yield Batch(features, rows.labels, rows.weights, rows.qid)


def _line_of_row(text: str, row: int, first_line: int) -> int:
    """The file line of the ``row``-th non-empty line of a block (for error messages)."""
    seen = -1
    for offset, line in enumerate(text.split("\n")):
        if line.split("#", 1)[0].strip():
            seen += 1
            if seen == row:
                return first_line + offset
    return first_line


# ------------------------------------------------------------------------------------------------ CSV


def _csv_width(path: str, filesystem) -> int | None:
    for text, _ in _text_blocks(path, filesystem, 1 << 16):
        for line in text.split("\n"):
            if line.strip():
                return line.count(",") + 1
    return None


def _csv_file(path: str, label_size: int, feature_dim: int | None, filesystem, block_bytes: int) -> Iterator[Batch]:
    width = _csv_width(path, filesystem)
    if width is None:
        return
    if feature_dim is not None and width != feature_dim + label_size:
        raise TextFormatError(f"{path}: line 1 has {width} columns, but {feature_dim} features"
                              f"{' plus the label' if label_size else ''} make {feature_dim + label_size}")
    if width <= label_size:
        raise TextFormatError(f"{path}: line 1 has {width} column(s): no feature columns after the label")
    names = [f"c{i}" for i in range(width)]
    fs, inner = fsutil.resolve(path, filesystem)
    row = 0
    with fs.open_input_stream(inner) as stream:
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=names, block_size=block_bytes),
                convert_options=pacsv.ConvertOptions(column_types={n: pa.float32() for n in names},
                                                     null_values=[""], strings_can_be_null=False,
                                                     quoted_strings_can_be_null=False))
            for record_batch in reader:
                matrix = _columns_to_matrix(record_batch)
                if label_size:
                    labels = matrix[:, 0].copy()
                    missing = np.isnan(labels)
                    if missing.any():
                        at = row + int(np.argmax(missing)) + 1
                        raise TextFormatError(f"{path}: data row {at}: the label (first column) is missing")
                    features = np.ascontiguousarray(matrix[:, label_size:])
                else:
                    labels, features = None, matrix
                row += len(matrix)
                yield Batch(features, labels)
        except pa.ArrowInvalid as exc:
            raise _locate_csv_error(path, filesystem, width, str(exc)) from None


def _columns_to_matrix(record_batch: pa.RecordBatch) -> np.ndarray:
    n, k = record_batch.num_rows, record_batch.num_columns
    out = np.empty((n, k), np.float32)
    for j, column in enumerate(record_batch.columns):
        out[:, j] = column.to_numpy(zero_copy_only=False)
    return out


def _locate_csv_error(path: str, filesystem, width: int, arrow_message: str) -> TextFormatError:
    """Name the first line whose fields do not parse (slow path, errors only)."""
    for text, first_line in _text_blocks(path, filesystem, DEFAULT_BLOCK_BYTES):
        for offset, line in enumerate(_LINE_SPLIT.split(text)):
            if not line.strip():
                continue
            fields = line.split(",")
            if len(fields) != width:
                return TextFormatError(f"{path}: line {first_line + offset} has {len(fields)} columns, "
                                       f"expected {width}")
            for column, field in enumerate(fields):
                value = field.strip()
                if not value:
                    continue
                try:
                    float(value)
                except ValueError:
                    return TextFormatError(f"{path}: line {first_line + offset}, column {column + 1}: "
                                           f"{value[:50]!r} is not a number")
    return TextFormatError(f"{path}: {arrow_message}")

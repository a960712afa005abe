"""Image-file channels (``application/x-image``): ``.lst`` files naming JPEG/PNG files and their labels.

A ``.lst`` line is ``index<TAB>label[<TAB>label2 ...]<TAB>relative/path.jpg`` (MXNet's ``im2rec`` format, which
SageMaker's ``train_lst`` / ``validation_lst`` channels use); paths are relative to the image channel's root.
This module reads and writes them as ``im2rec`` does, builds one from a folder tree (``im2rec --list``: one
class per sub-folder), streams the images a list names as :class:`ImageRecord` s, and packs them into a
``.rec`` byte for byte as ``im2rec --pass-through --pack-label`` does.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

from . import fs as fsutil
from .image_records import ImageRecord, ImageRecordWriter

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")  # im2rec's defaults; SageMaker takes .jpg and .png


class ImageListError(ValueError):
    """A malformed ``.lst`` line, or an image a list names that cannot be read. Names the file and the line."""


@dataclass(frozen=True)
class ListEntry:
    """One ``.lst`` line: the image's index (its record id), its label(s) and its path under the root."""

    index: int
    labels: tuple[float, ...]
    path: str

    def line(self) -> str:
        """The line as ``im2rec`` writes it (labels with ``%f``)."""
        return f"{self.index:d}\t" + "".join(f"{v:f}\t" for v in self.labels) + f"{self.path}\n"


def parse_line(line: str, source: str = "<lst>", number: int = 0) -> ListEntry | None:
    """One line (None for a blank one). Unlike ``im2rec``, which prints and skips a bad line, this raises."""
    if not line.strip():
        return None
    fields = [f.strip() for f in line.strip().split("\t")]
    where = f"{source} line {number}"
    if len(fields) < 3:
        raise ImageListError(f"{where}: expected index<TAB>label(s)<TAB>path, found {len(fields)} "
                             f"tab-separated field(s): {line.rstrip()[:120]!r}")
    try:
        index = int(fields[0])
    except ValueError:
        raise ImageListError(f"{where}: the index {fields[0]!r} is not an integer") from None
    if index < 0:
        raise ImageListError(f"{where}: the index {index} is negative (it becomes a record id, an unsigned int)")
    labels = []
    for text in fields[1:-1]:
        try:
            labels.append(float(text))
        except ValueError:
            raise ImageListError(f"{where}: the label {text!r} is not a number") from None
    if not fields[-1]:
        raise ImageListError(f"{where}: the image path is empty")
    return ListEntry(index, tuple(labels), fields[-1])


def iter_list(path: str, filesystem: pafs.FileSystem | None = None) -> Iterator[ListEntry]:
    """The entries of a ``.lst`` file, streamed line by line."""
    fs, inner = fsutil.resolve(path, filesystem)
    with fs.open_input_stream(inner) as raw:
        pending = b""
        number = 0
        while True:
            chunk = raw.read(1 << 20)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop() if chunk else b""
            for line in lines:
                number += 1
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ImageListError(f"{path} line {number}: not UTF-8 text ({exc.reason})") from None
                entry = parse_line(text, path, number)
                if entry is not None:
                    yield entry
            if not chunk:
                return


def write_list(path: str, entries: Iterable[ListEntry], filesystem: pafs.FileSystem | None = None) -> int:
    """Write a ``.lst`` file (atomically), byte for byte as ``im2rec`` writes it. Returns the line count."""
    lines = [e.line() for e in entries]
    fs, inner = fsutil.resolve(path, filesystem)
    fsutil.write_bytes_atomic(fs, inner, "".join(lines).encode("utf-8"))
    return len(lines)


def list_image_files(root: str, recursive: bool = True, extensions: Iterable[str] = IMAGE_EXTENSIONS,
                     filesystem: pafs.FileSystem | None = None) -> list[ListEntry]:
    """The entries ``im2rec --list --no-shuffle`` makes for a folder.

    Recursive: folders are walked top-down in name order, files in name order within a folder, and each folder
    holding images gets the next class label in the order it is first met (0, 1, ...). Not recursive: the
    root's own images, all labelled 0.
    """
    fs, base = fsutil.resolve(root, filesystem)
    exts = {e.lower() for e in extensions}
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=recursive))
    local = fsutil.is_local(fs)
    rel = (lambda p: os.path.relpath(p, base)) if local else (lambda p: posixpath.relpath(p, base))
    files_in: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for info in infos:
        parent = os.path.dirname(info.path) if local else posixpath.dirname(info.path)
        if info.type == pafs.FileType.Directory:
            children.setdefault(parent, []).append(info.path)
        elif info.type == pafs.FileType.File and os.path.splitext(info.base_name)[1].lower() in exts:
            files_in.setdefault(parent, []).append(info.path)
    entries: list[ListEntry] = []
    classes: dict[str, int] = {}

    def walk(folder: str) -> None:
        for path in sorted(files_in.get(folder, []), key=lambda p: os.path.basename(p)):
            label = classes.setdefault(folder, len(classes)) if recursive else 0
            entries.append(ListEntry(len(entries), (float(label),), rel(path)))
        if recursive:
            for sub in sorted(children.get(folder, []), key=lambda p: os.path.basename(p)):
                walk(sub)

    walk(base.rstrip("/") if len(base) > 1 else base)
    return entries


def iter_list_images(lst_path: str, root: str, filesystem: pafs.FileSystem | None = None, part: int = 0,
                     num_parts: int = 1, pack_label: bool = True) -> Iterator[ImageRecord]:
    """The images a ``.lst`` names, read from under ``root``, as records (id = the line's index).

    One label gives a scalar label; several give a multi-label array (``pack_label``, ``im2rec --pack-label``)
    or only the first (``im2rec``'s default). ``part`` of ``num_parts`` takes every ``num_parts``-th entry, so
    workers' parts differ by at most one image. A missing or unreadable image names the list file and line.
    """
    if not 0 <= part < num_parts:
        raise ValueError(f"part must be in [0, {num_parts}), got {part}")
    fs, base = fsutil.resolve(root, filesystem)
    join = os.path.join if fsutil.is_local(fs) else posixpath.join
    lst_fs = fs if filesystem is not None else None
    for ordinal, entry in enumerate(iter_list(lst_path, lst_fs)):
        if ordinal % num_parts != part:
            continue
        path = join(base, entry.path)
        where = f"{fsutil.join(root, entry.path)} ({lst_path}, index {entry.index})"
        try:
            data = fsutil.read_bytes(fs, path)
        except (FileNotFoundError, OSError) as exc:
            raise ImageListError(f"{where}: cannot read the image: {exc}") from None
        if not entry.labels:
            raise ImageListError(f"{where}: the list gives no label")
        label = entry.labels[0] if len(entry.labels) == 1 or not pack_label else list(entry.labels)
        yield ImageRecord(label, data, entry.index, 0, where)


def pack_image_list(lst_path: str, root: str, rec_path: str, idx_path: str | None = None,
                    filesystem: pafs.FileSystem | None = None, pack_label: bool = True) -> int:
    """Pack the images of a list into a ``.rec`` (+ ``.idx``) without re-encoding them, as ``im2rec
    --pass-through [--pack-label]`` does (keys = the list's indexes). Returns the number of records."""
    with ImageRecordWriter(rec_path, idx_path, filesystem) as writer:
        for record in iter_list_images(lst_path, root, filesystem, pack_label=pack_label):
            writer.write(record, key=record.id)
        return writer.count

"""Paths and URIs through pyarrow.fs: local paths, file://, hdfs://, s3://, gs:// … alike."""

from __future__ import annotations

import os
import posixpath
import uuid
from contextlib import contextmanager, suppress

import pyarrow.fs as pafs


def resolve(uri: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or any URI pyarrow understands."""
    if filesystem is not None:
        return filesystem, uri
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    return pafs.FileSystem.from_uri(uri)


def join(base: str, *parts: str) -> str:
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.join(rest, *parts)}"
    return os.path.join(base, *parts)


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write to a sibling temporary name, then rename over ``path`` (atomic on local and HDFS)."""
    parent = posixpath.dirname(path) if not is_local(fs) else os.path.dirname(path)
    fs.create_dir(parent, recursive=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    try:
        fs.move(tmp, path)
    except Exception:
        fs.delete_file(tmp)
        raise


@contextmanager
def output_stream(fs: pafs.FileSystem, path: str):
    parent = os.path.dirname(path) if is_local(fs) else posixpath.dirname(path)
    fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as f:
        yield f


def delete_dir_quietly(fs: pafs.FileSystem, path: str) -> None:
    with suppress(FileNotFoundError, OSError):
        fs.delete_dir(path)

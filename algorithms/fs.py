"""Paths and URIs through pyarrow.fs: local paths, file://, hdfs://, s3://, gs:// … alike."""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from contextlib import contextmanager, suppress

import pyarrow.fs as pafs

_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(ValueError):
    """A name from a manifest that does not stay inside its folder."""


def check_relative(name: object) -> str:
    """``name`` if it is a plain relative POSIX path (``part-0.pbr``, ``sub/vocab.txt``), else UnsafePathError.

    Manifests come from wherever a model or channel was downloaded, so their file names are untrusted: no
    absolute paths, drive letters or URIs, no ``..``/``.``/empty components, no backslashes (a separator on
    Windows, and on a POSIX store a way to smuggle one into a name), no NUL. Checked by text, so it holds
    for every store; :func:`child_inside` adds the check after resolving symlinks where a store has them.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"file name {name!r} is not a plain relative path")
    parts = name.split("/")
    if ("\\" in name or "\0" in name or "://" in name or name.startswith("/") or _DRIVE.match(name)
            or any(part in ("", ".", "..") for part in parts)):
        raise UnsafePathError(f"file name {name!r} is not a plain relative path inside the folder")
    return name


def child(fs: pafs.FileSystem, root: str, name: str) -> str:
    """The path of a checked relative ``name`` under ``root`` in ``fs``."""
    return os.path.join(root, *name.split("/")) if is_local(fs) else posixpath.join(root, name)


def child_inside(fs: pafs.FileSystem, root: str, name: object, what: str = "folder") -> str:
    """``child(fs, root, name)`` for a name that stays inside ``root``: checked by text on every store, and on
    local stores also after resolving symlinks (a link to ``/etc/passwd`` or ``../other`` is refused)."""
    path = child(fs, root, check_relative(name))
    if is_local(fs):
        check_resolves_inside(root, path, name, what)
    return path


def check_resolves_inside(root: str, path: str, name: object = None, what: str = "folder") -> None:
    """UnsafePathError when the local ``path`` resolves (symlinks followed) outside the local folder ``root``."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and os.path.commonpath([real_root, real]) != real_root:
        shown = name if name is not None else os.path.relpath(path, root)
        raise UnsafePathError(f"{shown} resolves outside the {what} (to {real})")


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

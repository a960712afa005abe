"""Model artifacts: a folder with ``manifest.json`` plus tensors in safe formats.

``manifest.json`` is written last, so a folder without one is not a model (a failed or cancelled job
leaves nothing that looks good). Tensors are ``.npz`` loaded with ``allow_pickle=False``; other
formats (XGBoost JSON, torch ``state_dict`` loaded with ``weights_only=True``) are the model's own
files, listed in the manifest.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pyarrow.fs as pafs

from . import __version__
from . import fs as fsutil
from .npz import ArrayBudget, NpzError, read_npz

MANIFEST = "manifest.json"
ARRAYS = "model.npz"
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    pass


@dataclass
class ArtifactManifest:
    algorithm: str
    hyperparameters: dict[str, str]
    feature_dim: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    library_version: str = __version__
    created_at: float = field(default_factory=time.time)
    training_job: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> ArtifactManifest:
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
            version = int(doc.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise ArtifactError(f"{source}: format version {version} is newer than this library reads "
                                    f"({FORMAT_VERSION}); upgrade spark-ml")
            known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
            files = known.get("files", [])
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                raise ValueError("files must be a list of file names")
            if not isinstance(known.get("hyperparameters", {}), dict):
                raise ValueError("hyperparameters must be an object")
            return cls(**known)
        except (TypeError, ValueError, KeyError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"{source}: not a model manifest: {exc}") from None


def write_npz(target: str | BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` for any array names, never pickling.

    ``np.savez(file, **arrays)`` takes ``file`` and ``allow_pickle`` as its own arguments, so arrays with
    those names would fail or silently vanish; and it pickles object arrays.
    """
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def save_arrays(directory: str, arrays: dict[str, np.ndarray], name: str = ARRAYS) -> str:
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ArtifactError(f"array {key!r} has dtype object; artifacts hold numeric arrays only")
    write_npz(os.path.join(directory, name), {k: np.asarray(v) for k, v in arrays.items()})
    return name


def load_arrays(directory: str, name: str = ARRAYS, *, expected: Mapping[str, Sequence[int | None]] | None = None,
                budget: ArrayBudget | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``name`` in a local model folder, checked before any data is inflated (see npz.py).

    ``expected`` is the model's hook for what its manifest says (``{"centroids": (k, feature_dim)}``;
    None matches any length); ``budget`` bounds the bytes the archive may declare.
    """
    try:
        path = fsutil.child_inside(pafs.LocalFileSystem(), directory, name, "artifact folder")
        return read_npz(path, budget=budget, expected=expected, source=f"{directory}/{name}")
    except ValueError as exc:  # UnsafePathError, NpzError
        raise ArtifactError(str(exc) if isinstance(exc, NpzError) else f"{directory}: {exc}") from None


def _local_files(local_dir: str) -> list[str]:
    """Every file under a local model folder, as sorted relative POSIX paths (nested folders allowed)."""
    files = []
    for parent, _, names in os.walk(local_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(parent, name), local_dir).replace(os.sep, "/")
            if rel != MANIFEST:
                files.append(rel)
    return sorted(files)


def write_artifact(local_dir: str, manifest: ArtifactManifest, destination: str) -> str:
    """Copy a finished local model folder to ``destination`` (path or URI), manifest last. Returns it.

    A destination that already holds a model is refused, unless that model came from the same training
    job (a retried attempt replaces its own earlier output).
    """
    manifest.files = _local_files(local_dir)
    fs, root = fsutil.resolve(destination)
    existing = fsutil.child(fs, root, MANIFEST)
    if fsutil.exists(fs, existing):
        previous = ArtifactManifest.from_json(fsutil.read_bytes(fs, existing).decode(), existing)
        if manifest.training_job is None or previous.training_job != manifest.training_job:
            raise ArtifactError(f"{destination} already holds a model; choose another location")
        fs.delete_file(existing)
    fs.create_dir(root, recursive=True)
    for name in manifest.files:
        target = fsutil.child(fs, root, name)
        if "/" in name:
            fs.create_dir(target.rsplit("/", 1)[0] if not fsutil.is_local(fs) else os.path.dirname(target),
                          recursive=True)
        with open(os.path.join(local_dir, name), "rb") as f_in, fs.open_output_stream(target) as f_out:
            shutil.copyfileobj(f_in, f_out, 8 << 20)
    fsutil.write_bytes_atomic(fs, existing, manifest.to_json().encode())
    return destination


def read_manifest(location: str) -> ArtifactManifest:
    fs, root = fsutil.resolve(location)
    path = fsutil.child(fs, root, MANIFEST)
    if not fsutil.exists(fs, path):
        raise ArtifactError(f"{location} is not a model artifact (no {MANIFEST}; the job that wrote it may "
                            "have failed)")
    return ArtifactManifest.from_json(fsutil.read_bytes(fs, path).decode(), f"{location}/{MANIFEST}")


def fetch(location: str, into: str | None = None) -> tuple[str, ArtifactManifest]:
    """A local folder holding the artifact (the folder itself when it is local), and its manifest.

    The manifest's file names are untrusted (whoever wrote the store wrote them): each must be a plain
    relative path inside the folder, checked before the first byte is copied, so a download never writes
    outside ``into`` nor reads outside the artifact. A local artifact holding a symlink that resolves outside
    its folder is refused, whether the manifest lists it or not (a model class may open its files by name).
    """
    manifest = read_manifest(location)
    fs, root = fsutil.resolve(location)
    source = f"{location}/{MANIFEST}"
    names = [_checked_name(name, source) for name in manifest.files]
    if fsutil.is_local(fs):
        _check_local_links(root, location)
        return root, manifest
    into = into or tempfile.mkdtemp(prefix="spark-ml-model-")
    for name in [*names, MANIFEST]:  # the manifest too: the copy is a complete artifact folder
        local = fsutil.child(pafs.LocalFileSystem(), into, name)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        try:
            fsutil.check_resolves_inside(into, local, name, "download folder")
        except fsutil.UnsafePathError as exc:
            raise ArtifactError(f"{location}: {exc}") from None
        with fs.open_input_stream(fsutil.child(fs, root, name)) as f_in, open(local, "wb") as f_out:
            shutil.copyfileobj(f_in, f_out, 8 << 20)
    return into, manifest


def _checked_name(name: object, source: str) -> str:
    try:
        return fsutil.check_relative(name)
    except fsutil.UnsafePathError as exc:
        raise ArtifactError(f"{source}: {exc}") from None


def _check_local_links(root: str, location: str) -> None:
    for parent, dirs, files in os.walk(root):
        for entry in dirs + files:
            path = os.path.join(parent, entry)
            if os.path.islink(path):
                try:
                    fsutil.check_resolves_inside(root, path, os.path.relpath(path, root), "artifact folder")
                except fsutil.UnsafePathError as exc:
                    raise ArtifactError(f"{location}: {exc}") from None


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    write_npz(buf, arrays)
    return buf.getvalue()

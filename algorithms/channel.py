"""Channels: a folder of data shards plus ``manifest.json``, as training workers and Spark see them."""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import asdict, dataclass, field, replace

import pyarrow.fs as pafs

from . import fs as fsutil

RECORDIO_PROTOBUF = "application/x-recordio-protobuf"
CSV = "text/csv"
LIBSVM = "text/libsvm"
RECORDIO_IMAGE = "application/x-recordio"
SHARDED_BY_KEY = "ShardedByKey"
FULLY_REPLICATED = "FullyReplicated"
DISTRIBUTIONS = (SHARDED_BY_KEY, FULLY_REPLICATED)
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "spark_ml.channel"
MANIFEST_VERSION = 1

_EXTENSIONS = {".pbr": RECORDIO_PROTOBUF, ".rec": RECORDIO_IMAGE, ".csv": CSV, ".libsvm": LIBSVM,
               ".svm": LIBSVM, ".txt": None, ".json": "application/json"}  # .json: Seq2Seq's vocab channel


def base_content_type(content_type: str) -> str:
    """``text/csv;label_size=0`` -> ``text/csv``."""
    return content_type.split(";", 1)[0].strip().lower()


def content_type_params(content_type: str) -> dict[str, str]:
    params = {}
    for part in content_type.split(";")[1:]:
        if "=" in part:
            key, value = part.split("=", 1)
            params[key.strip().lower()] = value.strip()
    return params


@dataclass(frozen=True)
class Shard:
    path: str  # relative to the channel folder: a plain relative path inside it (see fs.check_relative)
    records: int | None = None
    bytes: int | None = None

    def __post_init__(self) -> None:
        fsutil.check_relative(self.path)  # manifests are untrusted: no /etc/passwd, no ../
        for name in ("records", "bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"shard {self.path}: {name} must be a count, got {value!r}")


@dataclass(frozen=True)
class Manifest:
    """What a channel holds. ``feature_dim`` and the record counts let workers plan without reading data."""

    content_type: str
    shards: tuple[Shard, ...]
    feature_dim: int | None = None
    has_label: bool = False
    label_dim: int | None = None
    sparse: bool | None = None
    feature_dtype: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_records(self) -> int | None:
        counts = [s.records for s in self.shards]
        return None if any(c is None for c in counts) else sum(counts)

    def to_json(self) -> str:
        doc = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "content_type": self.content_type,
               "num_records": self.num_records, "feature_dim": self.feature_dim, "has_label": self.has_label,
               "label_dim": self.label_dim, "sparse": self.sparse, "feature_dtype": self.feature_dtype,
               "shards": [asdict(s) for s in self.shards]}
        if self.extra:
            doc["extra"] = self.extra
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = MANIFEST) -> Manifest:
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
            if doc.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, not {MANIFEST_FORMAT!r}")
            if int(doc.get("version", 0)) > MANIFEST_VERSION:
                raise ValueError(f"version {doc['version']} is newer than this library understands "
                                 f"({MANIFEST_VERSION})")
            shards = tuple(Shard(s["path"], s.get("records"), s.get("bytes")) for s in doc["shards"])
            return cls(content_type=doc["content_type"], shards=shards, feature_dim=doc.get("feature_dim"),
                       has_label=bool(doc.get("has_label")), label_dim=doc.get("label_dim"),
                       sparse=doc.get("sparse"), feature_dtype=doc.get("feature_dtype"),
                       extra=doc.get("extra") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: not a valid channel manifest: {exc}") from None


@dataclass(frozen=True)
class Channel:
    """A channel: where its shards are, their content type and how they are dealt to workers.

    ``manifest`` is None for folders written by other tools (SageMaker's SDK, sagemaker-spark): then
    the shards are the folder's data files and counts are unknown until read.
    """

    path: str
    content_type: str = RECORDIO_PROTOBUF
    distribution: str = SHARDED_BY_KEY
    manifest: Manifest | None = None
    files: tuple[Shard, ...] | None = None  # the shards, when there is no manifest

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                             f"got {self.distribution!r}")

    @classmethod
    def open(cls, path: str, content_type: str | None = None, distribution: str = SHARDED_BY_KEY,
             filesystem: pafs.FileSystem | None = None) -> Channel:
        """The channel at ``path``, from its manifest when it has one, else from its data files."""
        fs, root = fsutil.resolve(path, filesystem)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"channel {path} does not exist")
        if info.type == pafs.FileType.File:
            ctype = content_type or _type_of(root) or RECORDIO_PROTOBUF
            parent = path.rstrip("/").rsplit("/", 1)[0] if "://" in path else os.path.dirname(root)
            return cls(parent, ctype, distribution, None, (Shard(info.base_name, None, info.size),))
        join = os.path.join if fsutil.is_local(fs) else posixpath.join
        manifest_path = join(root, MANIFEST)
        if fsutil.exists(fs, manifest_path):
            source = f"{path}/{MANIFEST}"
            manifest = Manifest.from_json(fsutil.read_bytes(fs, manifest_path).decode(), source)
            if content_type and base_content_type(content_type) != base_content_type(manifest.content_type):
                raise ValueError(f"channel {path} holds {manifest.content_type}, not {content_type}")
            if fsutil.is_local(fs):
                for shard in manifest.shards:
                    _check_inside(root, shard.path, f"{source}: shard ")
            return cls(path, content_type or manifest.content_type, distribution, manifest)
        files = list_data_files(fs, root, source=path)
        if not files:
            raise FileNotFoundError(f"channel {path} has no {MANIFEST} and no data files")
        types = {_type_of(f.path) for f in files} - {None}
        ctype = content_type or (types.pop() if len(types) == 1 else RECORDIO_PROTOBUF)
        return cls(path, ctype, distribution, None, tuple(files))

    def shards(self, filesystem: pafs.FileSystem | None = None) -> list[Shard]:
        if self.manifest is not None:
            return list(self.manifest.shards)
        if self.files is not None:
            return list(self.files)
        fs, root = fsutil.resolve(self.path, filesystem)
        return list_data_files(fs, root, source=self.path)

    def shard_uri(self, shard: Shard) -> str:
        return fsutil.join(self.path, shard.path)

    @property
    def feature_dim(self) -> int | None:
        return self.manifest.feature_dim if self.manifest else None

    @property
    def num_records(self) -> int | None:
        return self.manifest.num_records if self.manifest else None

    def with_distribution(self, distribution: str) -> Channel:
        return replace(self, distribution=distribution)

    def __repr__(self) -> str:
        n = self.num_records
        return (f"Channel({self.path!r}, content_type={self.content_type!r}, "
                f"distribution={self.distribution!r}, "
                f"records={'?' if n is None else n}, feature_dim={self.feature_dim})")


def _type_of(path: str) -> str | None:
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def list_data_files(fs: pafs.FileSystem, root: str, source: str | None = None) -> list[Shard]:
    """Data files of a folder, sorted; names starting with ``_`` or ``.`` are bookkeeping, not data.

    On a local store a file that is a symlink resolving outside the folder is refused (``source`` names the
    folder in the error), as a manifest naming one would be.
    """
    selector = pafs.FileSelector(root, recursive=False)
    shards = []
    for info in fs.get_file_info(selector):
        name = info.base_name
        if info.type != pafs.FileType.File or name.startswith(("_", ".")) or name == MANIFEST:
            continue
        if name.endswith((".crc", ".tmp")):
            continue
        if fsutil.is_local(fs):
            _check_inside(root, name, f"{source or root}: ")
        shards.append(Shard(name, None, info.size))
    return sorted(shards, key=lambda s: s.path)


def _check_inside(root: str, name: str, prefix: str) -> None:
    try:
        fsutil.check_resolves_inside(root, os.path.join(root, *name.split("/")), name, "channel folder")
    except fsutil.UnsafePathError as exc:
        raise ValueError(f"{prefix}{exc}") from None

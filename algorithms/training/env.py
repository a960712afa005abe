"""What a training worker is given: SageMaker's training contract, on local paths and URIs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property

from ..backend import Backend, select_backend
from ..batch import Batch
from ..channel import RECORDIO_PROTOBUF, Channel, Shard, base_content_type
from .collectives import Collectives, LocalCollectives
from .reporter import Reporter


@dataclass
class ChannelInput:
    """This worker's part of one channel: the shard files it reads (all of them when FullyReplicated)."""

    name: str
    files: list[str]
    content_type: str = RECORDIO_PROTOBUF
    feature_dim: int | None = None
    has_label: bool | None = None
    num_records: int | None = None  # this worker's records, when known
    total_records: int | None = None  # the whole channel's records, when known
    distribution: str = "ShardedByKey"
    file_records: list[int | None] | None = None  # each file's records per the manifest: checked while reading

    @classmethod
    def from_channel(cls, name: str, channel: Channel, shards: list[Shard] | None = None) -> ChannelInput:
        shards = channel.shards() if shards is None else shards
        counts = [s.records for s in shards]
        manifest = channel.manifest
        return cls(name=name, files=[channel.shard_uri(s) for s in shards], content_type=channel.content_type,
                   feature_dim=channel.feature_dim, has_label=manifest.has_label if manifest else None,
                   num_records=None if None in counts else sum(counts), total_records=channel.num_records,
                   distribution=channel.distribution, file_records=counts)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches of ``batch_size`` records over this worker's files, streamed with bounded memory."""
        ctype = base_content_type(self.content_type)
        if ctype == RECORDIO_PROTOBUF:
            from ..reader import iter_batches

            return iter_batches(self.files, batch_size, feature_dim=self.feature_dim,
                                expected_records=self._file_records())
        from ..text_formats import iter_text_batches

        return iter_text_batches(self.files, self.content_type, batch_size, feature_dim=self.feature_dim)

    def blocks(self, max_rows: int) -> Iterator[Batch]:
        """Batches of at most ``max_rows`` records, of varying size: slices of the reader's decoded chunks, never
        joined across them. For algorithms whose result does not depend on how rows are grouped (sums)."""
        if base_content_type(self.content_type) == RECORDIO_PROTOBUF:
            from ..reader import iter_file_batches

            return (block for path, count in zip(self.files, self._file_records(), strict=True)
                    for block in iter_file_batches(path, max_rows, feature_dim=self.feature_dim,
                                                   expected_records=count))
        return self.batches(max_rows)

    def _file_records(self) -> list[int | None]:
        counts = self.file_records
        return list(counts) if counts is not None and len(counts) == len(self.files) else [None] * len(self.files)

    def worker_batches(self, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        """This worker's share of the channel, for work split among workers (evaluation): its own shards, or
        for a FullyReplicated channel every ``world_size``-th file (every ``world_size``-th batch if there are
        fewer files than workers)."""
        if world_size == 1 or self.distribution != "FullyReplicated":
            return self.batches(batch_size)
        if len(self.files) >= world_size:
            counts = self.file_records[rank::world_size] if self.file_records is not None else None
            return replace(self, files=self.files[rank::world_size], num_records=None,
                           file_records=counts).batches(batch_size)
        return (b for i, b in enumerate(self.batches(batch_size)) if i % world_size == rank)


@dataclass
class TrainingEnv:
    """One worker's view of a training job.

    ``hyperparameters`` are strings with SageMaker's names. ``rank`` is this worker's index among
    ``hosts``; rank 0 writes the model. ``gpus`` are the device addresses Spark gave this worker's task
    (``CUDA_VISIBLE_DEVICES`` is already set to them), ``device`` is ``"cuda"`` or ``"cpu"``, and ``backend``
    the array backend chosen once for that device (:func:`algorithms.backend.select_backend`).
    """

    hyperparameters: dict[str, str]
    channels: dict[str, ChannelInput]
    model_dir: str
    output_dir: str | None = None
    rank: int = 0
    hosts: list[str] = field(default_factory=lambda: ["algo-1"])
    gpus: list[str] = field(default_factory=list)
    collectives: Collectives = field(default_factory=LocalCollectives)
    reporter: Reporter = field(default_factory=Reporter)
    num_cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    job_name: str | None = None
    address: str = "127.0.0.1"  # this worker's network address, for framework rendezvous (torch, XGBoost)
    checkpoint_dir: str | None = None  # folder or URI kept across re-runs of a failed attempt (SageMaker's
    # checkpoint_local_path); the driver deletes it once the job ended

    @property
    def world_size(self) -> int:
        return len(self.hosts)

    @property
    def current_host(self) -> str:
        return self.hosts[self.rank]

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    @cached_property
    def backend(self) -> Backend:
        """numpy or torch on this worker's device, chosen on first use and kept for the whole job."""
        backend = select_backend(self.device)
        if backend.device != self.device:
            self.reporter.log(f"array backend: {backend.name} on {backend.device} (this worker's device: "
                              f"{self.device})")
        return backend

    def channel(self, name: str) -> ChannelInput | None:
        return self.channels.get(name)

    def require_channel(self, name: str) -> ChannelInput:
        if name not in self.channels:
            raise ValueError(f"the '{name}' channel is required (given: {', '.join(self.channels) or 'none'})")
        return self.channels[name]

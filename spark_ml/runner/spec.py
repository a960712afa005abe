"""What the driver sends to every worker task: plain data, built once per job."""

from __future__ import annotations

from dataclasses import dataclass, field

BUILTIN, SCRIPT, EXECUTABLE = "builtin", "script", "executable"


@dataclass
class ChannelPlan:
    """One channel and the shards each worker reads (``assignments[rank]`` = [(shard path, records)])."""

    name: str
    path: str
    content_type: str
    distribution: str
    feature_dim: int | None
    has_label: bool | None
    total_records: int | None
    assignments: list[list[tuple[str, int | None]]]


@dataclass
class ScriptPlan:
    """Bring-your-own code: a Python entry point (script mode) or an executable (container contract)."""

    entry_point: str | None = None  # script mode: path inside the source folder
    command: list[str] | None = None  # executable: argv, may use {base_dir} / {model_dir} placeholders
    source_archive: bytes | None = None  # gzipped tar of the source folder, shipped with the job
    metric_definitions: list[dict[str, str]] = field(default_factory=list)  # [{"Name": .., "Regex": ..}]
    environment: dict[str, str] = field(default_factory=dict)


@dataclass
class WorkerSpec:
    job_name: str
    kind: str
    algorithm: str
    hyperparameters: dict[str, str]
    channels: list[ChannelPlan]
    num_workers: int
    gpus_per_worker: float
    model_location: str
    checkpoint_location: str | None = None  # kept across re-runs of the barrier stage; removed when the job ends
    monitor_url: str | None = None
    monitor_token: str | None = None
    script: ScriptPlan | None = None

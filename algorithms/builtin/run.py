"""Run a built-in algorithm under the training contract: train, and on rank 0 write the model."""

from __future__ import annotations

from dataclasses import dataclass

from ..artifact import ArtifactManifest
from ..training.env import TrainingEnv
from .persistence import save_model
from .registry import get


@dataclass
class WorkerResult:
    """What one worker's run produced: its final metrics and, on rank 0, the manifest of the saved model."""

    metrics: dict[str, float]
    manifest: ArtifactManifest | None  # rank 0 only


def run_builtin(algorithm: str, env: TrainingEnv) -> WorkerResult:
    model = get(algorithm)(env).train()
    metrics = dict(env.reporter.final_metrics)
    manifest = None
    if env.is_master:
        manifest = save_model(model, env.model_dir, metrics, env.job_name)
    return WorkerResult(metrics, manifest)

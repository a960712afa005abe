"""Run a built-in algorithm under the training contract: train, and on rank 0 write the model."""

from __future__ import annotations

from dataclasses import dataclass

from .. import builtin
from ..artifact import ArtifactManifest
from ..models import save_model
from .env import TrainingEnv


@dataclass
class TrainingResult:
    metrics: dict[str, float]
    manifest: ArtifactManifest | None  # rank 0 only


def run_builtin(algorithm: str, env: TrainingEnv) -> TrainingResult:
    algo = builtin.get(algorithm)(env)
    model = algo.train()
    metrics = dict(env.reporter.final_metrics)
    manifest = None
    if env.is_master:
        manifest = save_model(model, env.model_dir, metrics, env.job_name)
    return TrainingResult(metrics, manifest)

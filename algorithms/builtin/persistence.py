"""Built-in models as artifacts: a folder of the model's files and ``manifest.json``, written last."""

from __future__ import annotations

import os

from ..artifact import MANIFEST, ArtifactManifest, fetch
from .base import Model
from .registry import get


def save_model(model: Model, directory: str, metrics: dict[str, float] | None = None,
               training_job: str | None = None) -> ArtifactManifest:
    """Write a model into a local folder: its files first, ``manifest.json`` last."""
    os.makedirs(directory, exist_ok=True)
    model.save(directory)
    manifest = ArtifactManifest(algorithm=model.algorithm, hyperparameters=dict(model.hyperparameters),
                                feature_dim=model.feature_dim, metrics=dict(metrics or {}),
                                files=sorted(f for f in os.listdir(directory) if f != MANIFEST),
                                training_job=training_job)
    tmp = os.path.join(directory, f".{MANIFEST}.tmp")
    with open(tmp, "w") as f:
        f.write(manifest.to_json())
    os.replace(tmp, os.path.join(directory, MANIFEST))
    return manifest


def load_model(location: str) -> Model:
    """The model at a local path or URI; fails clearly for folders that are not finished artifacts."""
    directory, manifest = fetch(location)
    cls = get(manifest.algorithm).model_class
    return cls.load(directory, manifest)

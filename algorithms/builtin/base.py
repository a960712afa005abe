"""The interface every built-in algorithm implements, and the model it produces.

An algorithm streams over its worker's shards: ``init -> update(batch)* -> merge(states) ->
finalize -> Model``. State is a dict of numpy arrays, so workers merge it through the collectives
(``allgather_state``) without pickle. ``train`` is the default driver loop; algorithms whose
training is not one mergeable pass (SGD with per-epoch model averaging, a final reduction on rank 0,
early stopping) override it and still use the same pieces.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..artifact import ArtifactManifest, load_arrays, save_arrays
from ..batch import Batch
from ..hyperparameters import AUTO, HyperparameterSpec
from ..training.collectives import State
from ..training.env import TrainingEnv


@dataclass(frozen=True)
class Output:
    """One key of a model's response (SageMaker's name), per record a scalar or a vector."""

    name: str
    kind: str = "scalar"  # "scalar" | "vector"
    dtype: str = "float32"


class Model(ABC):
    """A trained model: predicts SageMaker's response keys for a batch, saves itself in safe formats."""

    algorithm: ClassVar[str]
    outputs: ClassVar[tuple[Output, ...]]
    json_envelope: ClassVar[str] = "predictions"  # PCA answers {"projections": [...]}

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int):
        self.hyperparameters = dict(hyperparameters)
        self.feature_dim = int(feature_dim)

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @abstractmethod
    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        """Arrays keyed by output name: ``(n,)`` for scalar outputs, ``(n, k)`` for vector outputs."""

    @abstractmethod
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The learned tensors."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, str], feature_dim: int) -> Model:
        """Rebuild from :meth:`to_arrays`."""

    def save(self, directory: str) -> None:
        """Write the model's files into a local folder (the manifest is written by the caller)."""
        save_arrays(directory, self.to_arrays())

    @classmethod
    def load(cls, directory: str, manifest: ArtifactManifest) -> Model:
        return cls.from_arrays(load_arrays(directory), manifest.hyperparameters, manifest.feature_dim)

    def check_features(self, batch: Batch) -> None:
        if batch.feature_dim != self.feature_dim:
            raise ValueError(f"the model expects {self.feature_dim} features, got {batch.feature_dim}")


class Algorithm(ABC):
    """A built-in algorithm. Subclasses declare ``name``, ``hyperparameters``, ``model_class``."""

    name: ClassVar[str]
    hyperparameters: ClassVar[HyperparameterSpec]
    model_class: ClassVar[type[Model]]
    channels: ClassVar[tuple[str, ...]] = ("train",)  # channels it reads
    required_channels: ClassVar[tuple[str, ...]] = ("train",)
    supervised: ClassVar[bool] = False

    def __init__(self, env: TrainingEnv):
        self.env = env
        for name in self.required_channels:
            env.require_channel(name)
        unknown = sorted(set(env.channels) - set(self.channels))
        if unknown:
            raise ValueError(f"{self.name} does not read the channel(s) {', '.join(unknown)} "
                             f"(it reads {', '.join(self.channels)})")
        self.hp: dict[str, Any] = self.hyperparameters.parse(env.hyperparameters)
        self.feature_dim = self.resolve_feature_dim()

    @classmethod
    def validate(cls, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """Parse and check hyperparameters without data (fails before any Spark job starts)."""
        return cls.hyperparameters.parse(hyperparameters)

    def resolve_feature_dim(self) -> int:
        declared = self.hp.get("feature_dim")
        train = self.env.channel("train")
        found = train.feature_dim if train is not None else None
        if declared not in (None, AUTO) and found is not None and int(declared) != found:
            raise ValueError(f"feature_dim is {declared} but the train channel holds {found} features")
        if declared not in (None, AUTO):
            return int(declared)
        if found is None:
            raise ValueError("feature_dim is not set and the train channel does not record it")
        return int(found)

    def batch_size(self) -> int:
        size = self.hp.get("mini_batch_size")
        return 1000 if size in (None, AUTO) else int(size)

    def epochs(self) -> int:
        epochs = self.hp.get("epochs")
        return 1 if epochs in (None, AUTO) else int(epochs)

    # The streaming contract -------------------------------------------------------------------------
    @abstractmethod
    def init(self) -> State:
        ...

    @abstractmethod
    def update(self, state: State, batch: Batch) -> State:
        ...

    @abstractmethod
    def merge(self, states: list[State]) -> State:
        ...

    @abstractmethod
    def finalize(self, state: State) -> Model:
        ...

    def train(self) -> Model:
        """One mergeable pass per epoch over this worker's train shards, merged across workers each epoch."""
        train = self.env.require_channel("train")
        state = self.init()
        for epoch in range(self.epochs()):
            seen = 0
            for batch in train.batches(self.batch_size()):
                state = self.update(state, batch)
                seen += len(batch)
                self.env.reporter.progress(seen, epoch, train.num_records, self.epochs())
            state = self.merge(self.env.collectives.allgather_state(state))
        model = self.finalize(state)
        self.evaluate(model)
        return model

    def evaluate(self, model: Model) -> dict[str, float]:
        """Score the validation/test channels and report the metrics (SageMaker names). Default: none."""
        return {}

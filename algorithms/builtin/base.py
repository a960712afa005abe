"""The contract every built-in algorithm implements, and the model it produces.

:class:`Algorithm` is built on one worker's :class:`~algorithms.training.env.TrainingEnv` (its channels,
hyperparameters, rank, collectives, reporter and array backend) and has one required method,
``train() -> Model``; every worker calls it, the workers talk only through ``env.collectives``, and rank 0's
model is saved. How training goes is the algorithm's business: iterative ones (Linear Learner, FM, XGBoost,
the neural built-ins) loop over epochs or rounds and average or all-reduce across workers.

Streaming ones (K-Means, PCA) are a sequence of mergeable passes and subclass :class:`MergeablePass`:
``init -> update(batch)* -> merge(states) -> finalize``, with state a dict of numpy arrays, so one pass over
the streamed shards merges across workers (``allgather_state``, no pickle) and the result does not depend
on how rows were split among workers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
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
    def expected_arrays(cls, hyperparameters: dict[str, str], feature_dim: int | None) -> dict[str, tuple]:
        """The shapes the manifest implies for the model's arrays (``None`` for a length it does not fix), checked
        from the ``.npy`` headers before anything is inflated, so a crafted artifact cannot make a loader
        allocate what the model could never need. Default: nothing beyond the size budget."""
        return {}

    @classmethod
    def load(cls, directory: str, manifest: ArtifactManifest) -> Model:
        expected = cls.expected_arrays(manifest.hyperparameters, manifest.feature_dim)
        return cls.from_arrays(load_arrays(directory, expected=expected), manifest.hyperparameters,
                               manifest.feature_dim)

    def for_accept(self, parameters: dict[str, str]) -> Model:
        """The model that answers a request whose ``Accept`` media type carried ``parameters`` (SageMaker's k-NN
        answers ``Accept: application/json; verbose=true`` with more outputs); this model by default."""
        return self

    def check_features(self, batch: Batch) -> None:
        if batch.feature_dim != self.feature_dim:
            raise ValueError(f"the model expects {self.feature_dim} features, got {batch.feature_dim}")


class Algorithm(ABC):
    """A built-in algorithm. Subclasses declare ``name`` (SageMaker's), ``hyperparameters`` and ``model_class``,
    and implement :meth:`train`."""

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

    @abstractmethod
    def train(self) -> Model:
        """Train on this worker's part of the channels, meeting the other workers through ``env.collectives``;
        report metrics through ``env.reporter``. Every worker returns the same model (rank 0's is saved)."""

    def evaluate(self, model: Model) -> dict[str, float]:
        """Score the validation/test channels and report the metrics (SageMaker names). Default: none."""
        return {}

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


class MergeablePass(Algorithm):
    """An algorithm trained by streamed passes whose per-worker states merge exactly.

    One pass: :meth:`init`, :meth:`update` for each batch of this worker's shards (:meth:`stream`), then every
    worker's state merged (:meth:`merged`); :meth:`finalize` turns a merged state into the model. The default
    :meth:`train` runs one such pass per epoch; algorithms with more between passes (K-Means shares its centers,
    randomized PCA refines a basis) override it and use the same pieces.
    """

    @abstractmethod
    def init(self) -> State:
        """The empty state of a pass."""

    @abstractmethod
    def update(self, state: State, batch: Batch) -> State:
        """``state`` with ``batch`` folded in."""

    @abstractmethod
    def merge(self, states: list[State]) -> State:
        """One state from several workers' (or batches') states, as if one worker had seen all their rows."""

    @abstractmethod
    def finalize(self, state: State) -> Model:
        """The model of a merged state."""

    def stream(self, batches: Iterable[Batch], state: State, epoch: int = 0, epochs: int | None = None) -> State:
        """Fold this worker's ``batches`` into ``state``, reporting progress."""
        train = self.env.channel("train")
        total = train.num_records if train is not None else None
        seen = 0
        for batch in batches:
            state = self.update(state, batch)
            seen += len(batch)
            self.env.reporter.progress(seen, epoch, total, epochs)
        return state

    def merged(self, state: State) -> State:
        """Every worker's ``state`` merged (the same on every worker)."""
        return self.merge(self.env.collectives.allgather_state(state))

    def train(self) -> Model:
        """One mergeable pass per epoch over this worker's train shards, merged across workers each epoch."""
        train = self.env.require_channel("train")
        state = self.init()
        for epoch in range(self.epochs()):
            state = self.merged(self.stream(train.batches(self.batch_size()), state, epoch, self.epochs()))
        model = self.finalize(state)
        self.evaluate(model)
        return model

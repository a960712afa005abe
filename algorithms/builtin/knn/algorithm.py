"""k-NN (SageMaker ``knn``): a faiss index over a uniform sample of the labelled training records.

One streamed pass (a :class:`~algorithms.builtin.base.MergeablePass`): each worker keeps a uniform sample of
``sample_size`` of its records with their labels (bottom-k reservoir sampling, :mod:`..sampling`); the workers'
samples merge into exactly the sample one worker would have drawn from the whole channel. Only the rows that
make the merged sample travel: the workers first agree on the largest key it holds, then each sends its rows
under it. Rank 0 projects the sample (``dimension_reduction_type``), builds the faiss index (on the worker's GPU
when it has one) and broadcasts faiss's serialized index; every worker then scores part of the ``test`` channel
for ``test:accuracy`` (classifier) or ``test:mse`` (regressor).

``sample_size`` larger than the channel is clamped (SageMaker's behaviour): the index holds every record, and
the job logs it. ``k`` larger than the records indexed is an error.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...batch import Batch
from ...training.collectives import State
from ..base import MergeablePass
from ..registry import register
from ..sampling import add_rows, compact, empty_sample, merge_samples, sampled_rows
from . import index as faiss_index
from . import params
from .model import KNNModel, index_vectors
from .reduction import Reduction

_SEED = 0x4B4E4E


@register
class KNN(MergeablePass):
    name = "knn"
    hyperparameters = params.HYPERPARAMETERS
    model_class = KNNModel
    channels = ("train", "test")
    supervised = True

    def __init__(self, env):
        super().__init__(env)
        params.check({**self.hp, "feature_dim": self.feature_dim})
        self.sample_size = int(self.hp["sample_size"])
        self.rng = np.random.default_rng([_SEED, env.rank])
        self.rows_streamed = 0

    @classmethod
    def validate(cls, hyperparameters):
        return params.check(super().validate(hyperparameters))

    # The streaming contract -------------------------------------------------------------------------
    def init(self) -> State:
        return empty_sample(1, self.sample_size, self.feature_dim, labels=True)

    def update(self, state: State, batch: Batch) -> State:
        if batch.feature_dim != self.feature_dim:
            raise ValueError(f"a training batch has {batch.feature_dim} features; feature_dim is {self.feature_dim}")
        if batch.labels is None:
            raise ValueError("the train channel has no labels; k-NN needs a label per record")
        values = batch.features.data if sp.issparse(batch.features) else batch.features
        if not np.isfinite(values).all():
            dense = batch.dense()
            row, feature = np.argwhere(~np.isfinite(dense))[0]
            raise ValueError(f"the train channel holds a non-finite feature value ({dense[row, feature]}) in record "
                             f"{self.rows_streamed + row} of this worker's shards (feature {feature})")
        self.rows_streamed += len(batch)
        return add_rows(state, self.sample_size, batch.features, self.rng, labels=batch.labels)

    def merge(self, states: list[State]) -> State:
        return merge_samples(states, self.sample_size)

    def merged(self, state: State) -> State:
        """The merged sample, sending only the rows it keeps: the workers first share their keys (8 bytes a row)
        and agree on the largest key of the merged sample, then each sends its rows up to that key."""
        collectives = self.env.collectives
        state = compact(state, self.sample_size)
        if collectives.world_size == 1:
            return state
        keys = np.concatenate(collectives.allgather(state["keys"][0]))
        finite = np.sort(keys[np.isfinite(keys)])
        cutoff = finite[min(self.sample_size, len(finite)) - 1] if len(finite) else np.inf
        kept = int(np.searchsorted(state["keys"][0], cutoff, side="right"))
        mine = {"keys": state["keys"][:, :kept], "rows": state["rows"][:, :kept], "labels": state["labels"][:, :kept],
                "fill": np.array([kept]), "tau": state["tau"], "seen": state["seen"]}
        return self.merge(collectives.allgather_state(mine))

    def finalize(self, state: State) -> KNNModel:
        """Rank 0 builds the index; every worker gets faiss's serialized bytes."""
        collectives = self.env.collectives
        arrays = None
        if collectives.rank == 0:
            arrays = self._build(state)
        arrays = collectives.broadcast_state(arrays)
        return KNNModel.from_arrays(arrays, self.env.hyperparameters, self.feature_dim)

    def _build(self, state: State) -> State:
        rows, labels = sampled_rows(state)
        rows, labels = rows[0], labels[0]
        records = int(state["seen"][0])
        if len(rows) < self.sample_size:
            self.env.reporter.log(f"sample_size is {self.sample_size} but the train channel holds {records} records:"
                                  " the index holds all of them")
        if len(rows) < int(self.hp["k"]):
            raise ValueError(f"k is {self.hp['k']} but the train channel holds only {records} records")
        kind = self.hp["dimension_reduction_type"]
        reduction = Reduction.create(kind, self.feature_dim, self.hp.get("dimension_reduction_target"))
        vectors = index_vectors(rows, reduction, self.hp["index_metric"], self._index_width(reduction.output_dim),
                                self.env.backend)
        index = faiss_index.build(self.hp, vectors, self.env.device)
        self.env.reporter.log(f"k-NN index: {faiss_index.describe(index)} from {len(rows)} of {records} records")
        return {"index": faiss_index.to_bytes(index), "labels": labels.astype(np.float32), **reduction.to_arrays()}

    def _index_width(self, dim: int) -> int:
        if self.hp["index_type"] == "faiss.IVFPQ":
            return params.padded_dim(dim, params.pq_m(self.hp, dim))
        return dim

    # Evaluation -------------------------------------------------------------------------------------
    def evaluate(self, model: KNNModel) -> dict[str, float]:
        """``test:accuracy`` (classifier) or ``test:mse`` (regressor) on the test channel, split among workers."""
        test = self.env.channel("test")
        if test is None:
            return {}
        collectives = self.env.collectives
        totals = np.zeros(2)
        for batch in test.worker_batches(self.batch_size(), collectives.rank, collectives.world_size):
            if batch.labels is None:
                raise ValueError("the test channel has no labels; k-NN's test metrics compare predictions with them")
            predicted = model.predict(batch)["predicted_label"].astype(np.float64)
            truth = np.asarray(batch.labels, np.float64).reshape(len(batch), -1)[:, 0]
            if model.predictor_type == "classifier":
                totals += (float(np.sum(predicted == truth)), len(batch))
            else:
                totals += (float(np.sum((predicted - truth) ** 2)), len(batch))
        total, records = collectives.allreduce(totals)
        if records == 0:
            return {}
        name = "test:accuracy" if model.predictor_type == "classifier" else "test:mse"
        metrics = {name: float(total / records)}
        self.env.reporter.metric(name, metrics[name])
        return metrics


__all__ = ["KNN"]

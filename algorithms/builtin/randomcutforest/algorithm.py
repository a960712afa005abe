"""Random Cut Forest (SageMaker ``randomcutforest``): anomaly scores from random cut trees over a sample.

One streamed pass (a :class:`~algorithms.builtin.base.MergeablePass`): each worker keeps, per tree, a uniform
sample of ``num_samples_per_tree`` of its rows (bottom-k reservoir sampling, :mod:`..sampling`; memory bounded by
trees x samples, not by the data); the workers' samples merge into exactly the samples one worker would have
drawn from the whole channel; every worker then builds the same forest from them (:mod:`.forest`: cuts chosen
proportional to the bounding box's ranges, Guha et al., ICML 2016). A row's score is its expected collusive
displacement averaged over the trees, on SageMaker's scale (:func:`.model.score_scale`).

The optional ``test`` channel holds 0/1 labels (1: anomaly); its rows are scored (split among the workers) and
``test:accuracy`` and ``test:precision`` / ``test:recall`` / ``test:f1`` report the prediction
``score > mean + 3 standard deviations`` of the test scores, SageMaker's threshold.

Sampling and building are seeded (per worker rank, and once for the forest), so a job repeats exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...batch import Batch
from ...hyperparameters import Hyperparameter, HyperparameterError, HyperparameterSpec
from ...training.collectives import State
from ..base import MergeablePass
from ..registry import register
from ..sampling import add_rows, compact, empty_sample, merge_samples, sampled_rows
from .forest import build_forest
from .metrics import threshold_metrics
from .model import RandomCutForestModel, score_scale

EVAL_METRICS = ("accuracy", "precision_recall_fscore")
_SAMPLE_SEED = 0x5CF1
_BUILD_SEED = 0x5CF2

HYPERPARAMETERS = HyperparameterSpec([
    Hyperparameter("feature_dim", int, low=1, high=10000,
                   doc="Number of features; required unless the train channel's manifest records it."),
    Hyperparameter("num_trees", int, default=100, low=50, high=1000,
                   doc="Trees in the forest; more trees give scores with less noise."),
    Hyperparameter("num_samples_per_tree", int, default=256, low=1, high=2048,
                   doc="Records each tree is built from (a uniform sample of the train channel); "
                       "1/num_samples_per_tree should be about the expected fraction of anomalies."),
    Hyperparameter("eval_metrics", list, default=list(EVAL_METRICS),
                   doc='Metrics on the labelled test channel: a JSON list of "accuracy" and/or '
                       '"precision_recall_fscore" (test:precision, test:recall, test:f1).'),
    Hyperparameter("mini_batch_size", int, default=1000, low=1,
                   doc="Records per streamed batch; the sample does not depend on it."),
])


def check_eval_metrics(values: list[str]) -> list[str]:
    metrics = [str(v).strip().lower() for v in values]
    if not metrics or any(m not in EVAL_METRICS for m in metrics):
        raise HyperparameterError("eval_metrics", 'must be a list of "accuracy" and/or "precision_recall_fscore", '
                                  f"got {values!r}")
    return metrics


@register
class RandomCutForest(MergeablePass):
    name = "randomcutforest"
    hyperparameters = HYPERPARAMETERS
    model_class = RandomCutForestModel
    channels = ("train", "test")

    def __init__(self, env):
        super().__init__(env)
        self.eval_metrics = check_eval_metrics(self.hp["eval_metrics"])
        self.num_trees = int(self.hp["num_trees"])
        self.samples_per_tree = int(self.hp["num_samples_per_tree"])
        self.rng = np.random.default_rng([_SAMPLE_SEED, env.rank])
        self.rows_streamed = 0

    @classmethod
    def validate(cls, hyperparameters):
        values = super().validate(hyperparameters)
        check_eval_metrics(values["eval_metrics"])
        return values

    # The streaming contract -------------------------------------------------------------------------
    def init(self) -> State:
        return empty_sample(self.num_trees, self.samples_per_tree, self.feature_dim)

    def update(self, state: State, batch: Batch) -> State:
        if batch.feature_dim != self.feature_dim:
            raise ValueError(f"a training batch has {batch.feature_dim} features; feature_dim is {self.feature_dim}")
        self._check_finite(batch)
        self.rows_streamed += len(batch)
        return add_rows(state, self.samples_per_tree, batch.features, self.rng)

    def merge(self, states: list[State]) -> State:
        return merge_samples(states, self.samples_per_tree)

    def merged(self, state: State) -> State:
        """Only each worker's sample travels (its buffer is dropped first)."""
        return self.merge(self.env.collectives.allgather_state(compact(state, self.samples_per_tree)))

    def finalize(self, state: State) -> RandomCutForestModel:
        samples, _ = sampled_rows(state)
        records = int(state["seen"][0])
        if records == 0:
            raise ValueError("the train channel holds no records")
        if samples.shape[1] < self.samples_per_tree:
            self.env.reporter.log(f"the train channel holds {records} records, fewer than num_samples_per_tree "
                                  f"({self.samples_per_tree}): each tree is built from all of them")
        forest = build_forest(samples, np.random.default_rng(_BUILD_SEED))
        return RandomCutForestModel(self.env.hyperparameters, self.feature_dim, forest,
                                    score_scale(forest.tree_mass, forest.num_trees))

    def _check_finite(self, batch: Batch) -> None:
        values = batch.features.data if sp.issparse(batch.features) else batch.features
        if np.isfinite(values).all():
            return
        dense = batch.dense()
        row, feature = np.argwhere(~np.isfinite(dense))[0]
        raise ValueError(f"the train channel holds a non-finite feature value ({dense[row, feature]}) in record "
                         f"{self.rows_streamed + row} of this worker's shards (feature {feature}); Random Cut Forest "
                         "needs finite features")

    # Evaluation -------------------------------------------------------------------------------------
    def evaluate(self, model: RandomCutForestModel) -> dict[str, float]:
        """``test:*`` metrics on the labelled test channel (each worker scores part of it)."""
        test = self.env.channel("test")
        if test is None:
            return {}
        collectives = self.env.collectives
        scores, labels = [], []
        for batch in test.worker_batches(self.batch_size(), collectives.rank, collectives.world_size):
            if batch.labels is None:
                raise ValueError("the test channel has no labels; Random Cut Forest's test channel holds a 0/1 "
                                 "label per record (1: anomaly)")
            scores.append(model.predict(batch)["score"].astype(np.float64))
            labels.append(np.asarray(batch.labels, np.float64).reshape(len(batch), -1)[:, 0])
        local = np.stack([np.concatenate(scores or [np.zeros(0)]), np.concatenate(labels or [np.zeros(0)])])
        joined = np.concatenate(collectives.allgather(local), axis=1)
        if joined.shape[1] == 0:
            return {}
        computed = threshold_metrics(joined[0], joined[1])
        names = {"accuracy": ["accuracy"], "precision_recall_fscore": ["precision", "recall", "f1"]}
        metrics = {f"test:{m}": computed[m] for group in self.eval_metrics for m in names[group]}
        for name, value in metrics.items():
            self.env.reporter.metric(name, value)
        return metrics


__all__ = ["EVAL_METRICS", "HYPERPARAMETERS", "RandomCutForest"]

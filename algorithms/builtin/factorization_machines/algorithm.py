"""SageMaker's Factorization Machines (``factorization-machines``): binary classifier or regressor.

Training streams each worker's shards in mini-batches and takes lazy Adam steps (see
:mod:`.trainer` for the math and the optimizer's semantics); after every epoch the workers merge
their models through the collectives (a data-weighted average, see :mod:`.state`). CSR input stays
sparse end to end. The math runs on the worker's array backend: numpy, or torch when the worker has a GPU
(or when ``SPARK_ML_ARRAY_BACKEND`` says so).

Metrics: per epoch ``train:`` metrics scored on each mini-batch before its step (progressive
validation), and after training ``test:`` metrics on the optional test channel: ``rmse`` for a
regressor; ``binary_classification_accuracy``, ``binary_classification_cross_entropy`` and
``binary_f_beta`` (F1 at threshold 0.5) for a binary classifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ...channel import FULLY_REPLICATED
from ...training.collectives import State
from ...training.env import ChannelInput, TrainingEnv
from ..base import Algorithm, Model
from ..registry import register
from .kernels import NumpyFMOps, fm_ops
from .metrics import check_labels, metrics_from_stats, num_stats, row_terms
from .model import NAME, FactorizationMachinesModel
from .params import SPEC, FMConfig, check_init_companions
from .state import initial_state, merge_touched, reset_epoch, touched_rows
from .trainer import FMTrainer, PreparedBatch, as_float32_features, prepare

EPOCH_CACHE_BYTES = 1 << 30  # a worker keeps its decoded batches for later epochs when they fit in this


class _EpochCache:
    """Decoded, prepared batches of the first epoch, kept when they fit the byte budget (else dropped)."""

    def __init__(self, budget: int):
        self.budget = budget
        self.items: list[tuple[int, PreparedBatch]] | None = [] if budget > 0 else None
        self.size = 0
        self.complete = False

    def add(self, item: tuple[int, PreparedBatch]) -> None:
        if self.items is None:
            return
        self.size += _nbytes(item[1])
        if self.size > self.budget:
            self.items = None
        else:
            self.items.append(item)

    def epoch_done(self) -> None:
        self.complete = self.items is not None


def _nbytes(batch: PreparedBatch) -> int:
    x = batch.x
    size = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes if sp.issparse(x) else x.nbytes
    return size + batch.y.nbytes + (0 if batch.cols is None else batch.cols.nbytes)


@register
class FactorizationMachines(Algorithm):
    name = NAME
    hyperparameters = SPEC
    model_class = FactorizationMachinesModel
    channels = ("train", "test")
    supervised = True

    @classmethod
    def validate(cls, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        values = super().validate(hyperparameters)
        check_init_companions(values)
        return values

    def __init__(self, env: TrainingEnv):
        super().__init__(env)
        check_init_companions(self.hp)
        self.config = FMConfig.from_values(self.hp, self.feature_dim)
        self.ops = fm_ops(env.backend)

    def _model(self, state: State) -> FactorizationMachinesModel:
        theta = state["theta"]
        hyperparameters = SPEC.to_strings({**self.hp, "feature_dim": self.feature_dim})
        return FactorizationMachinesModel(hyperparameters, self.feature_dim, float(state["w0"][0]),
                                          theta[:, 0].copy(), theta[:, 1:].copy())

    def train(self) -> FactorizationMachinesModel:
        cfg, env = self.config, self.env
        state = initial_state(cfg)
        cache = _EpochCache(EPOCH_CACHE_BYTES if cfg.epochs > 1 else 0)
        for epoch in range(cfg.epochs):
            trainer = FMTrainer(cfg, state, self.ops)
            for seen, batch in self._train_batches(cache):
                trainer.step(batch)
                env.reporter.progress(seen, epoch, env.channels["train"].num_records, cfg.epochs)
            cache.epoch_done()
            state = trainer.export()
            if env.world_size > 1:  # workers exchange only the rows of θ their data touched
                state = merge_touched(state, env.collectives.allgather_state(touched_rows(state)))
            if state["rows"][0] == 0:
                raise ValueError("the train channel holds no records")
            self._report("train", state["stats"], float(state["rows"][0]), epoch)
            state = reset_epoch(state, cfg)
        model = self._model(state)
        self.evaluate(model)
        return model

    def _train_batches(self, cache: _EpochCache):
        """(records so far, prepared batch) over this worker's train shards, from memory after epoch 1."""
        if cache.complete:
            yield from cache.items
            return
        seen = 0
        for batch in self.env.channels["train"].batches(self.config.mini_batch_size):
            prepared = prepare(batch, self.config, "train", seen)
            seen += len(batch)
            cache.add((seen, prepared))
            yield seen, prepared

    def evaluate(self, model: Model) -> dict[str, float]:
        test = self.env.channel("test")
        if test is None:
            return {}
        stats, rows = self._score_channel(model, test)
        if test.distribution != FULLY_REPLICATED and self.env.world_size > 1:
            total = self.env.collectives.allreduce(np.concatenate([stats, [rows]]))
            stats, rows = total[:-1], float(total[-1])
        return self._report("test", stats, rows)

    def _score_channel(self, model: FactorizationMachinesModel,
                       channel: ChannelInput) -> tuple[np.ndarray, float]:
        cfg, ops = self.config, NumpyFMOps()
        stats, rows = np.zeros(num_stats(cfg.binary)), 0
        for batch in channel.batches(cfg.mini_batch_size):
            y = check_labels(batch.labels, cfg.binary, channel.name, rows)
            raw = model.raw_features(as_float32_features(batch, model.feature_dim, channel.name))
            stats += ops.sums(row_terms(ops, raw, y, cfg.binary))
            rows += len(y)
        return stats, float(rows)

    def _report(self, channel: str, stats: np.ndarray, rows: float,
                epoch: int | None = None) -> dict[str, float]:
        metrics = {f"{channel}:{name}": value
                   for name, value in metrics_from_stats(stats, rows, self.config.binary).items()}
        for name, value in metrics.items():
            self.env.reporter.metric(name, value, epoch=epoch)
        return metrics

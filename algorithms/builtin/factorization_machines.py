"""SageMaker's Factorization Machines (``factorization-machines``): binary classifier or regressor.

Training streams each worker's shards in mini-batches and takes lazy Adam steps (see
:mod:`._fm_kernels` for the math and the optimizer's semantics); after every epoch the workers merge
their models through the collectives (a data-weighted average, see :mod:`._fm_state`). CSR input stays
sparse end to end. The math runs on numpy, or on torch when the worker has a GPU (or when
``SPARK_ML_FM_BACKEND=torch``).

Metrics: per epoch ``train:`` metrics scored on each mini-batch before its step (progressive
validation), and after training ``test:`` metrics on the optional test channel: ``rmse`` for a
regressor; ``binary_classification_accuracy``, ``binary_classification_cross_entropy`` and
``binary_f_beta`` (F1 at threshold 0.5) for a binary classifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from ..artifact import ArtifactError
from ..batch import Batch
from ..channel import FULLY_REPLICATED
from ..training.collectives import State
from ..training.env import ChannelInput, TrainingEnv
from . import register
from ._fm_hyperparameters import BINARY, SPEC, FMConfig, check_init_companions
from ._fm_kernels import FMTrainer, PreparedBatch, as_float32_features, prepare, raw_scores
from ._fm_metrics import check_labels, metrics_from_stats, num_stats, row_terms
from ._fm_ops import NumpyOps, select_ops
from ._fm_state import initial_state, merge_states, merge_touched, reset_epoch, touched_rows
from .base import Algorithm, Model, Output

NAME = "factorization-machines"
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


class FactorizationMachinesModel(Model):
    """``score`` (sigmoid of ŷ) and ``predicted_label`` (score >= 0.5) for a binary classifier; ``score``
    (ŷ) for a regressor. The learned ``w0``, ``w`` (d,) and ``V`` (d, k) are attributes."""

    algorithm = NAME
    outputs = (Output("score"), Output("predicted_label"))

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int, w0: float, w: np.ndarray,
                 V: np.ndarray):
        super().__init__(hyperparameters, feature_dim)
        predictor_type = self.hyperparameters.get("predictor_type")
        if predictor_type not in (BINARY, "regressor"):
            raise ArtifactError(f"factorization-machines model has predictor_type {predictor_type!r}; "
                                "expected binary_classifier or regressor")
        self.binary = predictor_type == BINARY
        if not self.binary:
            self.outputs = (Output("score"),)
        w = np.asarray(w, np.float32).reshape(-1)
        V = np.asarray(V, np.float32)
        if w.shape != (self.feature_dim,) or V.ndim != 2 or V.shape[0] != self.feature_dim:
            raise ArtifactError(f"factorization-machines model arrays do not match feature_dim "
                                f"{self.feature_dim}: w has shape {w.shape}, V has shape {V.shape}")
        self.w0 = float(w0)
        self.w = w
        self.V = V
        self._theta = np.ascontiguousarray(np.column_stack([w, V]))
        self._v_squared = V * V

    @property
    def num_factors(self) -> int:
        return self.V.shape[1]

    def raw(self, batch: Batch) -> np.ndarray:
        """ŷ before the link function (the log-odds for a binary classifier)."""
        self.check_features(batch)
        return self.raw_features(as_float32_features(batch, self.feature_dim, "input"))

    def raw_features(self, x: np.ndarray | sp.csr_matrix) -> np.ndarray:
        return raw_scores(x, self.w0, self._theta, self._v_squared).astype(np.float32, copy=False)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        raw = self.raw(batch)
        if not self.binary:
            return {"score": raw}
        score = expit(raw).astype(np.float32)
        return {"score": score, "predicted_label": (score >= 0.5).astype(np.float32)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"w0": np.array([self.w0], np.float32), "w": self.w, "V": self.V}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, str],
                    feature_dim: int) -> FactorizationMachinesModel:
        missing = sorted({"w0", "w", "V"} - set(arrays))
        if missing:
            raise ArtifactError(f"factorization-machines model lacks the array(s) {', '.join(missing)}")
        return cls(hyperparameters, feature_dim, float(np.asarray(arrays["w0"]).reshape(-1)[0]), arrays["w"],
                   arrays["V"])


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
        self.ops = select_ops(env.device)

    # The streaming contract (numpy, in place); train() runs the same steps on the chosen backend.
    def init(self) -> State:
        return initial_state(self.config)

    def update(self, state: State, batch: Batch) -> State:
        trainer = FMTrainer(self.config, state, NumpyOps())
        trainer.step(prepare(batch, self.config, "train", int(state["rows"][0])))
        return trainer.export()

    def merge(self, states: list[State]) -> State:
        return merge_states(states)

    def finalize(self, state: State) -> Model:
        theta = state["theta"]
        hyperparameters = SPEC.to_strings({**self.hp, "feature_dim": self.feature_dim})
        return FactorizationMachinesModel(hyperparameters, self.feature_dim, float(state["w0"][0]),
                                          theta[:, 0].copy(), theta[:, 1:].copy())

    def train(self) -> Model:
        cfg, env = self.config, self.env
        state = self.init()
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
        model = self.finalize(state)
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
        cfg, ops = self.config, NumpyOps()
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

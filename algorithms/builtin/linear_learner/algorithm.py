"""SageMaker's Linear Learner: many linear models trained at once by SGD, the best one kept.

How a job runs on each worker (every step that crosses workers goes through the collectives):

1. The scaler: per-feature mean and standard deviation (and the label's, for regression) from the
   first ``num_point_for_scaler`` train records, summed across workers (:mod:`.scaler`).
2. ``num_models`` models (:mod:`.grid`) start from the same weights on every worker and
   train as one ``(feature_dim, num_models * K)`` matrix, one GEMM per mini-batch
   (:mod:`.sgd`). After each epoch the workers average their models, weighted by the rows
   each saw.
3. Each epoch every model is scored: on the ``validation`` channel (loss, and for binary
   classifiers the selection criterion at its best threshold) when there is one, else by its
   training loss, as SageMaker documents. Each model keeps its best epoch. Training stops early when
   the best score has not improved by ``early_stopping_tolerance`` (relative) for
   ``early_stopping_patience`` epochs. Models far behind stop training early too (successive
   halving): after epochs 1, 2, 4, 8, … only the better half keeps training, down to ``KEEP_TRAINING``
   models, ranked as the final selection ranks them (on validation, else on the held-out train rows).
   A stopped model keeps its best epoch and still competes in the selection; on large data this cuts
   the training work about fourfold (32 models, 15 epochs).
4. The best model is selected, and a binary classifier's threshold calibrated, on the validation
   channel, or without one on a held-out sample of the train channel: 10% of each worker's rows,
   chosen by a hash of the row's position, at most ``HOLDOUT_MAX_ROWS`` rows and
   ``HOLDOUT_MAX_BYTES`` bytes in all. Those rows are never trained on.
5. The final model is scored on ``validation`` and ``test`` with SageMaker's metric names.

Memory does not grow with the data: the train and validation channels are streamed, the
calibration statistics are fixed-size histograms, and only the bounded held-out sample is kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...batch import Batch
from ...training.collectives import State
from ...training.env import ChannelInput, TrainingEnv
from ..base import Algorithm
from ..registry import register
from .grid import build_grid
from .kernels import linear_ops
from .losses import Loss
from .metrics import (
    NATURAL_EDGE,
    BinaryEvaluator,
    MarginHistogram,
    MulticlassEvaluator,
    RegressionEvaluator,
    best_edges,
    criterion_curves,
    edge_margin,
)
from .model import LinearLearnerModel
from .params import SPEC, LinearConfig, check, linear_config
from .scaler import Scaler, compute_scaler
from .sgd import SGDEnsemble

REPLAY_BYTES = 256 << 20  # per worker: decoded train mini-batches kept for later epochs
HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX_ROWS = 100_000
HOLDOUT_MAX_BYTES = 256 << 20
_HASH = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing of row positions
_EVAL_LOGITS = 1 << 21  # rows * models * classes per scoring batch
_CRITERION_METRICS = {"accuracy": "binary_classification_accuracy", "f_beta": "binary_f_beta"}
KEEP_TRAINING = 4  # successive halving stops here: this many models train through the last epoch


@register
class LinearLearner(Algorithm):
    name = "linear-learner"
    hyperparameters = SPEC
    model_class = LinearLearnerModel
    channels = ("train", "validation", "test")
    required_channels = ("train",)
    supervised = True

    @classmethod
    def validate(cls, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """Parse and cross-check hyperparameters without data (fails before any Spark job starts)."""
        return check(cls.hyperparameters.parse(hyperparameters))

    def __init__(self, env: TrainingEnv):
        super().__init__(env)
        self.hp = self.validate(env.hyperparameters)
        self.config: LinearConfig = linear_config(self.hp, self.feature_dim)
        c = self.config
        self.ops = linear_ops(env.backend)
        self.loss = Loss(
            c.loss,
            margin=c.margin,
            quantile=c.quantile,
            insensitivity=c.loss_insensitivity,
            delta=c.huber_delta,
        )
        self.collectives = env.collectives
        self.scaler: Scaler | None = None
        self.ensemble: SGDEnsemble | None = None
        self.holdout: _Holdout | None = None
        self._replay: _Replay | None = None
        self._scored_rows = 0
        self._epoch_metrics: dict[str, np.ndarray] = {}

    def batch_size(self) -> int:
        return self.config.mini_batch_size

    def epochs(self) -> int:
        return self.config.epochs

    def _setup(self) -> SGDEnsemble:
        """Compute the shared scaler, lay out the models and their starting weights."""
        c = self.config
        train = self.env.require_channel("train")
        self.scaler = compute_scaler(train, c, self.collectives)
        grid = build_grid(
            c.num_models,
            c.learning_rate,
            c.wd,
            c.l1,
            c.positive_example_weight_mult,
            self.scaler.balanced_positive_weight,
        )
        self.grid = grid
        self.ensemble = SGDEnsemble(self.ops, c, grid, self.scaler, self.loss)
        return self.ensemble

    # the driver -----------------------------------------------------------------------------------
    def train(self) -> LinearLearnerModel:
        env, c = self.env, self.config
        train = env.require_channel("train")
        validation = env.channel("validation")
        ens = self._setup()
        if validation is None:
            self.holdout = _Holdout(self.collectives.world_size, c.feature_dim, train.num_records)
        self._replay = _Replay(REPLAY_BYTES)
        tracker = _Tracker(ens)
        for epoch in range(c.epochs):
            ens.reset_epoch_stats()
            if self.holdout is not None:
                self.holdout.start_epoch()
            seen = 0
            for batch in self._train_batches(train):
                self._step(batch)
                seen += len(batch)
                env.reporter.progress(seen, epoch, train.num_records, c.epochs)
            merged = SGDEnsemble.merge(self.collectives.allgather_state(ens.state()))
            if merged["rows"][0] == 0:
                raise ValueError("the train channel has no records to train on (all were held out or empty)")
            ens.load_state(merged)
            train_loss = self._train_losses(merged)
            diverged = ens.end_epoch()
            for m in np.flatnonzero(diverged):
                env.reporter.log(
                    f"linear-learner: model {m} ({self.grid.describe(m)}) diverged at epoch "
                    f"{epoch}; it is dropped"
                )
            if not ens.active.any():
                raise ValueError(
                    "every model diverged (non-finite weights); lower learning_rate or check the "
                    "features for NaN or infinite values"
                )
            train_loss = np.where(ens.active, train_loss, np.inf)
            scores, val_loss, edges = train_loss, None, np.full(ens.M, NATURAL_EDGE)
            if validation is not None and ens.live:
                scored = self._score_models(
                    self._worker_batches(validation), ens.W, ens.b, "validation", ens.models
                )
                if not np.isnan(scored[0]).all():  # an empty validation channel leaves the training loss
                    scores, val_loss, edges = scored
            stop = tracker.observe(
                scores,
                train_loss if val_loss is None else val_loss,
                edges,
                c.early_stopping_tolerance,
                c.early_stopping_patience,
            )
            self._report_epoch(epoch, scores, train_loss, val_loss)
            if stop:
                env.reporter.log(
                    f"linear-learner: early stopping after epoch {epoch}: no relative improvement "
                    f"above {c.early_stopping_tolerance} for {c.early_stopping_patience} epochs"
                )
                break
            if ens.live == 0:  # the rest diverged; the stopped models' best epochs remain
                break
            if epoch + 1 < c.epochs:
                self._halve(epoch, tracker, scores, train_loss if val_loss is None else val_loss,
                            validation is not None)
        model = self._select(tracker, have_validation=validation is not None)
        self.evaluate(model)
        return model

    def _halve(
        self, epoch: int, tracker: _Tracker, scores: np.ndarray, losses: np.ndarray, have_validation: bool
    ) -> None:
        """Successive halving: after epochs 1, 2, 4, 8, … keep training the better half of the models, never
        fewer than ``KEEP_TRAINING``. Models rank by their validation score (then loss) when there is a
        validation channel, else by the same score on the held-out train rows, as the final selection
        ranks them; every worker decides the same from the same merged numbers."""
        ens = self._require_ensemble()
        if (epoch + 1) & epoch or ens.live <= KEEP_TRAINING:  # epoch + 1 is not a power of two
            return
        if not have_validation and self.holdout is not None:
            self.holdout.compact(self._eval_rows())
            held = self._score_models(iter(self.holdout.batches), ens.W, ens.b, "train", ens.models)
            if not np.isnan(held[0]).all():
                scores, losses = held[0], held[1]
        live = ens.models
        order = np.lexsort((live, losses[live], scores[live]))
        keep = live[order[: max(KEEP_TRAINING, math.ceil(ens.live / 2))]]
        ens.keep(keep)
        tracker.refocus(keep)
        self.env.reporter.log(
            f"linear-learner: after epoch {epoch}, {ens.live} models keep training: {keep.tolist()}"
        )

    # the train stream ----------------------------------------------------------------------------
    def _train_batches(self, channel: ChannelInput) -> Iterator[Batch]:
        """This epoch's training mini-batches with checked 1-D labels, held-out rows removed.

        The first epoch streams the channel; when this worker's mini-batches fit in ``REPLAY_BYTES`` they
        are kept and replayed in later epochs (same batches, same order), else every epoch streams again.
        """
        replay = self._replay
        if replay is not None and replay.complete:
            yield from replay.batches
            return
        recording = replay is not None and not replay.dropped
        for batch in channel.batches(self.config.mini_batch_size):
            if batch.feature_dim != self.config.feature_dim:
                raise ValueError(
                    f"the train channel holds records with {batch.feature_dim} features; "
                    f"feature_dim is {self.config.feature_dim}"
                )
            y = self._labels(batch, "train").astype(np.float32, copy=False)
            features = batch.features
            if self.holdout is not None:
                keep = self.holdout.split(batch, y)
                if keep is not None:
                    features, y = features[keep], y[keep]
            if len(y) == 0:
                continue
            part = Batch(features, y)
            if recording:
                replay.add(part)
            yield part
        if recording and not replay.dropped:
            replay.complete = True

    def _step(self, batch: Batch) -> None:
        ens = self._require_ensemble()
        ens.step(self.ops.asarray(batch.features), ens.labels(batch.labels))

    def _labels(self, batch: Batch, channel: str) -> np.ndarray:
        if batch.labels is None:
            raise ValueError(
                f"the {channel} channel has records without a label; linear-learner needs a label "
                "on every record"
            )
        y = np.asarray(batch.labels)
        if y.ndim == 2:
            if y.shape[1] != 1:
                raise ValueError(
                    f"the {channel} channel has labels of {y.shape[1]} values; linear-learner "
                    "needs one label per record"
                )
            y = y[:, 0]
        ptype = self.config.predictor_type
        if ptype == "binary_classifier":
            bad = (y != 0) & (y != 1)
            need = "0 or 1 (binary_classifier)"
        elif ptype == "multiclass_classifier":
            bad = ~((y >= 0) & (y < self.config.num_classes) & (y == np.floor(y)))
            need = (
                f"an integer in [0, {self.config.num_classes - 1}] (num_classes is {self.config.num_classes})"
            )
        else:
            bad = ~np.isfinite(y)
            need = "a finite number (regressor)"
        if bad.any():
            raise ValueError(
                f"the {channel} channel has the label {float(y[np.argmax(bad)])!r}; labels must be {need}"
            )
        return y

    # scoring models ----------------------------------------------------------------------------------
    def _train_losses(self, merged: State) -> np.ndarray:
        """Mean training loss per model in the label's units (inf for models that diverged)."""
        ens = self._require_ensemble()
        rows = max(float(merged["rows"][0]), 1.0)
        losses = np.full(ens.M, np.inf)
        losses[ens.models] = merged["loss_sum"] / rows * ens.label_scale**self.loss.degree
        return np.where(ens.active & np.isfinite(losses), losses, np.inf)

    def _eval_rows(self) -> int:
        ens = self._require_ensemble()
        return int(min(8192, max(256, _EVAL_LOGITS // (ens.M * ens.K))))

    def _worker_batches(self, channel: ChannelInput):
        """This worker's share of a channel's batches: its own shards, or a split of a replicated channel."""
        return channel.worker_batches(self._eval_rows(), self.collectives.rank, self.collectives.world_size)

    def _score_models(
        self, batches, W, b, channel: str, models: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every model's selection score (lower is better), mean loss and threshold edge on some batches,
        summed across workers. ``W``, ``b`` hold the columns of ``models`` (ids; all M when None); the
        arrays returned are by model id, inf (nan when no rows were scored) for the models not given."""
        c, ens, ops = self.config, self._require_ensemble(), self.ops
        models = np.arange(ens.M) if models is None else np.asarray(models)
        count = len(models)
        binary = c.predictor_type == "binary_classifier"
        threshold_criterion = binary and c.selection_criteria != "loss_function"
        hist = MarginHistogram(count) if threshold_criterion else None
        calibration_left = math.ceil(c.num_calibration_samples / self.collectives.world_size)
        loss_sum = np.zeros(count)
        extra_sum = np.zeros(count)  # regression: squared errors; multiclass: correct predictions
        rows = 0
        for batch in batches:
            if batch.feature_dim != c.feature_dim:
                raise ValueError(
                    f"the {channel} channel holds records with {batch.feature_dim} features; "
                    f"feature_dim is {c.feature_dim}"
                )
            y = self._labels(batch, channel)
            z = ens.margins(ops.asarray(batch.features), W, b)
            labels = ens.labels(y)
            value, _ = ens.loss.value_grad(ops, ens.shaped(z), labels, want_value=True)
            loss_sum += ops.to_numpy(value.reshape(len(y), count).sum(0)).astype(np.float64)
            if c.predictor_type == "regressor":
                r = z - labels
                extra_sum += ops.to_numpy((r * r).sum(0)).astype(np.float64)
            elif c.predictor_type == "multiclass_classifier":
                hit = ops.argmax_last(ens.shaped(z)) == labels.reshape(-1, 1)
                extra_sum += ops.to_numpy(hit.sum(0)).astype(np.float64)
            rows += len(y)
            if hist is not None and calibration_left > 0:
                take = min(calibration_left, len(y))
                hist.add(ops.to_numpy(z[:take]).astype(np.float64), y[:take])
                calibration_left -= take
        mine = {"loss_sum": loss_sum, "extra_sum": extra_sum, "rows": np.array([float(rows)])}
        if hist is not None:
            mine["hist"] = hist.counts
        states = self.collectives.allgather_state(mine)
        total_rows = sum(float(s["rows"][0]) for s in states)
        losses = np.sum([s["loss_sum"] for s in states], axis=0) / max(total_rows, 1.0)
        losses = losses * ens.label_scale**self.loss.degree
        losses = np.where(ens.active[models] & np.isfinite(losses), losses, np.inf)
        edges = np.full(count, NATURAL_EDGE)
        scores = losses
        if hist is not None:
            total = MarginHistogram(count, np.sum([s["hist"] for s in states], axis=0))
            values = criterion_curves(
                total, c.selection_criteria, c.f_beta, c.target_recall, c.target_precision
            )
            best, edges = best_edges(values)
            scores = np.where(np.isfinite(losses), -best, np.inf)
        extra = np.sum([s["extra_sum"] for s in states], axis=0) / max(total_rows, 1.0)
        metrics = {}
        if c.predictor_type == "regressor":
            mse = extra * ens.label_scale**2
            metrics = {"mse": mse, "rmse": np.sqrt(mse)}
        elif c.predictor_type == "multiclass_classifier":
            metrics = {"multiclass_accuracy": extra}
        elif c.selection_criteria in _CRITERION_METRICS:
            metrics = {_CRITERION_METRICS[c.selection_criteria]: -scores}
        self._scored_rows = int(total_rows)

        def by_model(values: np.ndarray, fill) -> np.ndarray:
            out = np.full(ens.M, fill, dtype=np.result_type(values, fill))
            out[models] = values
            return out

        self._epoch_metrics = {name: by_model(values, np.nan) for name, values in metrics.items()}
        if total_rows == 0:
            return np.full(ens.M, np.nan), by_model(losses, np.inf), by_model(edges, NATURAL_EDGE)
        return by_model(scores, np.inf), by_model(losses, np.inf), by_model(edges, NATURAL_EDGE)

    # selection and the final model -----------------------------------------------------------------
    def _select(self, tracker: _Tracker, have_validation: bool) -> LinearLearnerModel:
        ens = self._require_ensemble()
        scores, losses, edges = tracker.best_score, tracker.best_loss, tracker.best_edge
        source = "validation" if have_validation else "training loss"
        if not have_validation and self.holdout is not None:
            self.holdout.compact(self._eval_rows())
            held_scores, held_losses, held_edges = self._score_models(
                iter(self.holdout.batches), tracker.W, tracker.b, "train"
            )
            if not np.isnan(held_scores).all():
                scores, losses, edges = held_scores, held_losses, held_edges
                source = f"{self._scored_rows} held-out train rows"
        scores = np.where(ens.active, scores, np.inf)
        losses = np.where(np.isfinite(losses), losses, np.inf)
        m = int(np.lexsort((losses, scores))[0])
        coef, intercept = ens.model_weights(tracker.W, tracker.b, m)
        threshold_margin = (
            edge_margin(int(edges[m])) if self.config.predictor_type == "binary_classifier" else 0.0
        )
        selected = {"model": m, "epoch": int(tracker.best_epoch[m]), **self.grid.describe(m)}
        self.env.reporter.log(f"linear-learner: selected model {m} on {source}: {selected}")
        hyperparameters = dict(self.env.hyperparameters)
        hyperparameters["loss"] = self.config.loss
        return LinearLearnerModel(
            hyperparameters, self.config.feature_dim, coef, intercept, threshold_margin, selected
        )

    def evaluate(self, model: LinearLearnerModel) -> dict[str, float]:
        """Score the final model on the validation and test channels; report SageMaker's metric names."""
        results: dict[str, float] = {}
        for channel_name in ("validation", "test"):
            channel = self.env.channel(channel_name)
            if channel is None:
                continue
            evaluator = self._evaluator(model)
            for batch in self._worker_batches(channel):
                y = self._labels(batch, channel_name)
                z = model.decision_function(batch)
                if self.config.predictor_type == "multiclass_classifier":
                    evaluator.add(z, y)
                else:
                    evaluator.add(z[:, 0], y)
            states = self.collectives.allgather_state(evaluator.state)
            total = {k: np.sum([s[k] for s in states], axis=0) for k in evaluator.state}
            if total["rows"][0] == 0:
                continue
            for name, value in evaluator.metrics(total).items():
                key = f"{channel_name}:{name}"
                results[key] = value
                self.env.reporter.metric(key, value)
        model.metrics.update(results)
        return results

    def _evaluator(self, model: LinearLearnerModel):
        c = self.config
        if c.predictor_type == "binary_classifier":
            return BinaryEvaluator(self.loss, model.threshold_margin, c.f_beta)
        if c.predictor_type == "multiclass_classifier":
            return MulticlassEvaluator(self.loss, c.num_classes, c.accuracy_top_k, c.f_beta)
        return RegressionEvaluator(self.loss)

    def _report_epoch(
        self,
        epoch: int,
        scores: np.ndarray,
        train_loss: np.ndarray,
        val_loss: np.ndarray | None,
    ) -> None:
        reporter = self.env.reporter
        losses = train_loss if val_loss is None else val_loss
        m = int(np.lexsort((losses, np.where(np.isfinite(scores), scores, np.inf)))[0])
        reporter.metric("train:objective_loss", float(train_loss[m]), epoch=epoch)
        if val_loss is not None:
            reporter.metric("validation:objective_loss", float(val_loss[m]), epoch=epoch)
            for name, values in self._epoch_metrics.items():
                reporter.metric(f"validation:{name}", float(values[m]), epoch=epoch)
        criterion = "objective_loss" if val_loss is None else self._criterion_name()
        value = float(scores[m]) if criterion == "objective_loss" else float(-scores[m])
        reporter.log(
            f"#early_stopping_criteria_metric: host={self.env.current_host}, epoch={epoch}, "
            f"criteria={criterion}, value={value}"
        )

    def _criterion_name(self) -> str:
        c = self.config
        if c.predictor_type == "binary_classifier" and c.selection_criteria != "loss_function":
            return c.selection_criteria
        return "objective_loss"

    def _require_ensemble(self) -> SGDEnsemble:
        if self.ensemble is None:
            raise RuntimeError("linear-learner: init() has not run")
        return self.ensemble


class _Tracker:
    """Each model's best epoch so far (weights, score, loss, threshold) and the early-stopping count."""

    def __init__(self, ens: SGDEnsemble):
        self.ens = ens
        self.W, self.b = ens.ops.copy(ens.W), ens.ops.copy(ens.b)
        self.best_score = np.full(ens.M, np.inf)
        self.best_loss = np.full(ens.M, np.inf)
        self.best_edge = np.full(ens.M, NATURAL_EDGE, dtype=np.int64)
        self.best_epoch = np.full(ens.M, -1, dtype=np.int64)
        self.overall = math.inf
        self.overall_loss = math.inf
        self.stale = 0
        self.epoch = -1

    def refocus(self, models: np.ndarray) -> None:
        """Only ``models`` train on: early stopping measures progress against their best so far."""
        best = models[np.lexsort((self.best_loss[models], self.best_score[models]))[0]]
        self.overall, self.overall_loss = float(self.best_score[best]), float(self.best_loss[best])

    def observe(
        self,
        scores: np.ndarray,
        losses: np.ndarray,
        edges: np.ndarray,
        tolerance: float = 0.0,
        patience: int | None = None,
    ) -> bool:
        """Record an epoch's scores (lower is better); True when training should stop."""
        ens = self.ens
        self.epoch += 1
        scores = np.where(ens.active & np.isfinite(scores), scores, np.inf)
        better = (scores < self.best_score) | ((scores == self.best_score) & (losses < self.best_loss))
        better &= np.isfinite(scores)
        if better.any():
            self.W, self.b = ens.copy_models(self.W, self.b, np.flatnonzero(better))
            self.best_score[better] = scores[better]
            self.best_loss[better] = losses[better]
            self.best_edge[better] = edges[better]
            self.best_epoch[better] = self.epoch
        # Progress: the best score improved by the relative tolerance, or (a discrete criterion such as
        # accuracy often ties from epoch to epoch) it held and the best model's loss improved by it.
        best = (
            int(np.argmin(np.where(scores == scores.min(), losses, np.inf)))
            if np.isfinite(scores).any()
            else 0
        )
        current, current_loss = float(scores[best]), float(losses[best])
        improved = not math.isfinite(self.overall) or self.overall - current > tolerance * abs(self.overall)
        if not improved and current >= self.overall - tolerance * abs(self.overall):
            improved = current <= self.overall and self.overall_loss - current_loss > tolerance * abs(
                self.overall_loss
            )
        if improved:
            self.overall, self.overall_loss = min(self.overall, current), current_loss
            self.stale = 0
        else:
            self.stale += 1
        return patience is not None and self.stale >= patience


class _Holdout:
    """The train rows kept out of training for model selection and calibration when there is no validation
    channel: a fixed, hash-chosen 10% of each worker's rows, capped in rows and bytes.

    The same rows are held out every epoch: a row's fate depends only on its position in the worker's
    stream and on where the sample closed during the first epoch.
    """

    def __init__(self, world_size: int, feature_dim: int, worker_records: int | None):
        self.max_rows = math.ceil(HOLDOUT_MAX_ROWS / world_size)
        self.max_bytes = HOLDOUT_MAX_BYTES // world_size
        self.fraction = HOLDOUT_FRACTION
        if worker_records:
            self.fraction = min(HOLDOUT_FRACTION, max(self.max_rows / worker_records, 1e-6))
        self._limit = np.uint64(int(self.fraction * 2.0**64) if self.fraction < 1 else 2**64 - 1)
        self.batches: list[Batch] = []
        self.rows = 0
        self.bytes = 0
        self.closed_at: int | None = None  # stream position after which nothing more is held out
        self.first_epoch = True
        self.position = 0

    def start_epoch(self) -> None:
        if self.position and self.closed_at is None:
            self.closed_at = self.position
        if self.position:
            self.first_epoch = False
        self.position = 0

    def split(self, batch: Batch, y: np.ndarray) -> np.ndarray | None:
        """The mask of rows to train on, or None when every row is trained on."""
        n = len(batch)
        start, self.position = self.position, self.position + n
        if self.closed_at is not None and start >= self.closed_at:
            return None
        index = np.arange(start, start + n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            held = (index * _HASH) < self._limit
        if self.closed_at is not None:
            held &= index < np.uint64(self.closed_at)
        if not held.any():
            return None
        if self.first_epoch:
            held = self._collect(batch, y, held, start)
        return ~held

    def compact(self, rows: int) -> None:
        """Join the held-out pieces into batches of about ``rows`` rows for scoring."""
        blocks, pending, count = [], [], 0
        for part in self.batches:
            pending.append(part)
            count += len(part)
            if count >= rows:
                blocks.append(Batch.concat(pending))
                pending, count = [], 0
        if pending:
            blocks.append(Batch.concat(pending))
        self.batches = blocks

    def _collect(self, batch: Batch, y: np.ndarray, held: np.ndarray, start: int) -> np.ndarray:
        rows = np.flatnonzero(held)
        room = self.max_rows - self.rows
        if len(rows) >= room:
            rows = rows[:room]
            held = np.zeros_like(held)
            held[rows] = True
            self.closed_at = start + (int(rows[-1]) + 1 if len(rows) else 0)
        if len(rows) == 0:
            return held
        x = batch.features[rows]
        x = x.copy() if not sp.issparse(x) else x
        part = Batch(x, np.asarray(y[rows], dtype=np.float32))
        self.batches.append(part)
        self.rows += len(rows)
        self.bytes += _nbytes(x)
        if self.bytes >= self.max_bytes and self.closed_at is None:
            self.closed_at = start + int(rows[-1]) + 1
        return held


class _Replay:
    """The first epoch's mini-batches, kept while they fit in ``limit`` bytes (dropped whole past it)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.batches: list[Batch] = []
        self.bytes = 0
        self.complete = False
        self.dropped = False

    def add(self, batch: Batch) -> None:
        self.bytes += _nbytes(batch.features) + batch.labels.nbytes
        if self.bytes > self.limit:
            self.batches, self.dropped = [], True
        else:
            self.batches.append(batch)


def _nbytes(x) -> int:
    if sp.issparse(x):
        return int(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes)
    return int(x.nbytes)


__all__ = ["LinearLearner", "LinearLearnerModel"]

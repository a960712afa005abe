"""SageMaker's XGBoost, trained by XGBoost itself across the job's workers.

How a job runs on each worker:

1. Hyperparameters (SageMaker's names) are checked and mapped to ``xgboost.train`` params
   (:mod:`.params`); with a GPU from Spark, ``device="cuda"`` (after checking XGBoost can use it).
2. Workers agree on the feature count, then join XGBoost's collective: rank 0 starts the tracker and its
   address travels through the barrier (``xgboost_communicator``).
3. Each worker streams its own shards of ``train`` (and ``validation``) into a ``QuantileDMatrix``
   through a ``DataIter`` (:mod:`.data`), checking labels against the objective as they pass.
   XGBoost merges the workers' quantile sketches and gradient histograms itself, so the trees are those
   one process would grow on all the rows (up to the sketch's approximation).
4. ``xgboost.train`` runs with a callback streaming every round's metrics (``validation:auc``…) to the
   job, SageMaker's extra metrics computed exactly across workers, and early stopping that keeps the best
   iteration. Rank 0 writes the booster.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import numpy as np
import xgboost as xgb
from xgboost import collective

from ...training.distributed import xgboost_communicator
from ...training.env import TrainingEnv
from ...training.reporter import failures_reported_first
from ..base import Algorithm
from ..registry import register
from .data import ChannelData, DataError, LabelRule, agreed_feature_dim
from .metrics import RoundReporter, SageMakerMetrics
from .model import XGBoostModel
from .params import LEGACY, SPEC, XGBConfig, check, is_maximized, xgboost_config

TUNING_METRIC = "_tuning_objective_metric"


class GPUUnavailable(RuntimeError):
    """The worker was given a GPU but XGBoost cannot use CUDA; says what XGBoost reported."""


@register
class XGBoost(Algorithm):
    name = "xgboost"
    hyperparameters = SPEC
    model_class = XGBoostModel
    channels = ("train", "validation")
    required_channels = ("train",)
    supervised = True

    @classmethod
    def validate(cls, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """Parse and cross-check hyperparameters without data (fails before any Spark job starts)."""
        tuning = hyperparameters.get(TUNING_METRIC)
        return check(cls.hyperparameters.parse(hyperparameters), str(tuning) if tuning else None)

    def __init__(self, env: TrainingEnv):
        super().__init__(env)
        tuning = env.hyperparameters.get(TUNING_METRIC)
        self.hp = self.validate(env.hyperparameters)
        self.config: XGBConfig = xgboost_config(self.hp, env.num_cpus, env.device, tuning)
        if self.config.wants_gpu and env.device != "cuda":
            raise GPUUnavailable("tree_method gpu_hist trains on a GPU, but this worker has none: set "
                                 "gpusPerWorker=1 (or tree_method hist to train on CPU)")

    def resolve_feature_dim(self) -> int:
        return -1  # agreed across workers in train(), from the manifest or the files themselves

    # training -------------------------------------------------------------------------------------------
    def train(self) -> XGBoostModel:
        env = self.env
        if env.device == "cuda":
            self._check_cuda()
        if env.world_size > 1:
            with xgboost_communicator(env.collectives, env.address), failures_reported_first(env.reporter):
                booster, rounds = self._train()
        else:
            booster, rounds = self._train()
        return self._finish(booster, rounds)

    def _train(self) -> tuple[xgb.Booster, RoundReporter]:
        """Inside XGBoost's collective (when distributed): agree on the data's shape, build it, train."""
        env, config = self.env, self.config
        train_channel = env.require_channel("train")
        validation_channel = env.channel("validation")
        self.feature_dim = agreed_feature_dim(train_channel, config.csv_weights)
        if validation_channel is not None:
            vdim = agreed_feature_dim(validation_channel, config.csv_weights)
            if vdim > self.feature_dim:
                raise DataError(f"the validation channel has {vdim} features but the train channel "
                                f"{self.feature_dim}")
        ignored = [name for name in LEGACY if env.hyperparameters.get(name) is not None]
        if ignored and env.is_master:
            env.reporter.log(f"{', '.join(ignored)}: no effect in XGBoost {xgb.__version__} (accepted for SageMaker "
                             "compatibility, not passed on)")
        env.reporter.log(f"xgboost {xgb.__version__}: device={config.params['device']}"
                         f"{' (CUDA_VISIBLE_DEVICES=' + ','.join(env.gpus) + ')' if env.gpus else ''}, "
                         f"nthread={config.params['nthread']}, tree_method={config.params.get('tree_method')}, "
                         f"objective={config.objective}, {self.feature_dim} features, worker {env.rank + 1} of "
                         f"{env.world_size}")
        rule = LabelRule(config.objective, config.num_class)
        needs_qid = config.objective.startswith("rank:")
        train_data = ChannelData(train_channel, self.feature_dim, rule, config.csv_weights, needs_qid)
        dtrain = self._matrix(train_data, None)
        evals = [(dtrain, "train")]
        if validation_channel is not None:
            validation_data = ChannelData(validation_channel, self.feature_dim, rule, config.csv_weights, needs_qid)
            evals.append((self._matrix(validation_data, dtrain), "validation"))
        self._note_classes(train_data)
        rounds = RoundReporter(env.reporter, env.is_master, config.num_round, train_data.rows)
        callbacks: list[xgb.callback.TrainingCallback] = [rounds]
        if config.early_stopping_rounds:
            watched = config.metrics_order[-1] if config.metrics_order else None
            callbacks.append(xgb.callback.EarlyStopping(
                rounds=config.early_stopping_rounds, metric_name=watched, data_name=evals[-1][1],
                maximize=is_maximized(watched) if watched else None, save_best=True))
        custom = (SageMakerMetrics(config.sagemaker_metrics, config.objective, config.num_class)
                  if config.sagemaker_metrics else None)
        try:
            booster = xgb.train(config.params, dtrain, num_boost_round=config.num_round, evals=evals,
                                callbacks=callbacks, custom_metric=custom, verbose_eval=False)
        except xgb.core.XGBoostError as exc:
            raise RuntimeError(f"XGBoost failed: {_xgboost_message(exc)}") from None
        return booster, rounds

    def _matrix(self, data: ChannelData, ref: xgb.DMatrix | None) -> xgb.DMatrix:
        params = self.config.params
        try:
            if self.config.quantile_friendly:
                return xgb.QuantileDMatrix(data, ref=ref, max_bin=params.get("max_bin", 256), missing=np.nan,
                                           nthread=params["nthread"])
            # exact/approx and gblinear need the rows themselves: this worker's rows are held in memory
            from ...batch import Batch

            rows = Batch.concat(list(data.batches()))
            data.rows = len(rows)
            labels = rows.labels
            kwargs: dict[str, Any] = {"weight": rows.weights, "qid": rows.qid if data.needs_qid else None}
            if labels is not None and labels.ndim == 2:
                kwargs.update(label_lower_bound=labels[:, 0], label_upper_bound=labels[:, 1])
                labels = None
            elif self.config.objective == "survival:aft":
                kwargs.update(label_lower_bound=labels, label_upper_bound=labels)
                labels = None
            return xgb.DMatrix(rows.features, labels, missing=np.nan, nthread=params["nthread"], **kwargs)
        except xgb.core.XGBoostError as exc:
            raise DataError(f"channel {data.channel.name}: XGBoost rejected the data: {_xgboost_message(exc)}") \
                from None

    def _note_classes(self, data: ChannelData) -> None:
        """Classification: the labels seen across workers against num_class (a hint, not an error)."""
        config = self.config
        if not config.objective.startswith(("binary:", "multi:")):
            return
        seen = int(collective.allreduce(np.array([data.classes_seen], np.int64), collective.Op.MAX)[0])
        if config.objective.startswith("multi:") and seen < int(config.num_class or 0) and self.env.is_master:
            self.env.reporter.log(f"num_class={config.num_class} but the train channel's labels go up to "
                                  f"{seen - 1}: classes {seen}..{int(config.num_class) - 1} have no rows")

    def _finish(self, booster: xgb.Booster, rounds: RoundReporter) -> XGBoostModel:
        best = booster.attr("best_iteration")
        last = int(best) if best is not None else booster.num_boosted_rounds() - 1
        final = rounds.at(last)
        self.env.reporter.final_metrics.update(final)  # the kept model's metrics, not the last round's
        if best is not None and self.env.is_master:
            self.env.reporter.log(f"early stopping: best iteration {best} "
                                  f"({', '.join(f'{k}={v:.5f}' for k, v in final.items())}); kept "
                                  f"{booster.num_boosted_rounds()} rounds")
        hyperparameters = {k: v for k, v in self.env.hyperparameters.items() if k in SPEC or k == TUNING_METRIC}
        return XGBoostModel(hyperparameters, self.feature_dim, booster)

    # GPU ------------------------------------------------------------------------------------------------
    def _check_cuda(self) -> None:
        """Fail, saying why, when XGBoost cannot train on the GPU this worker was given (rather than
        silently falling back to the CPU, as XGBoost itself does)."""
        given = f"device=cuda (GPU {','.join(self.env.gpus)} from Spark, CUDA_VISIBLE_DEVICES=" \
                f"{','.join(self.env.gpus)})"
        problem = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                probe = xgb.DMatrix(np.zeros((2, 1), np.float32), np.array([0.0, 1.0], np.float32))
                booster = xgb.train({"device": "cuda", "tree_method": "hist", "nthread": 1, "verbosity": 1},
                                    probe, num_boost_round=1)
                device = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
                if not device.startswith("cuda"):
                    said = [_xgboost_message(w.message) for w in caught if "GPU" in str(w.message)]
                    problem = "; ".join(said) or f"XGBoost switched the device to {device}"
            except xgb.core.XGBoostError as exc:
                problem = _xgboost_message(exc)
        if problem:
            raise GPUUnavailable(f"worker {self.env.rank} was given {given}, but XGBoost {xgb.__version__} cannot "
                                 f"use CUDA: {problem}")


def _xgboost_message(error) -> str:
    """XGBoost's message without its timestamp, source location and stack trace."""
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("Stack trace",
                                                                                                  "[bt]"))]
    first = " ".join(lines[:3]) if lines else text
    return re.sub(r"\[\d\d:\d\d:\d\d\]\s*(WARNING:\s*)?\S+?:\d+:\s*", "", first).strip()

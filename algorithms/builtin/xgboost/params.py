"""SageMaker XGBoost's hyperparameters: declarations, cross-checks, and the params given to ``xgboost.train``.

Names, ranges and rules follow SageMaker's XGBoost container (``hyperparameter_validation.py``). A few of its
names no longer exist in XGBoost 2+ (``sketch_eps``, ``dsplit``, ``predictor``…): they are accepted, so
SageMaker jobs run unchanged, and not passed on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ...hyperparameters import Hyperparameter, HyperparameterError, HyperparameterSpec

H = Hyperparameter

OBJECTIVES = (
    "reg:squarederror", "reg:squaredlogerror", "reg:logistic", "reg:pseudohubererror", "reg:absoluteerror",
    "reg:quantileerror", "reg:gamma", "reg:tweedie", "reg:linear",
    "binary:logistic", "binary:logitraw", "binary:hinge",
    "multi:softmax", "multi:softprob",
    "count:poisson", "survival:cox", "survival:aft",
    "rank:ndcg", "rank:map", "rank:pairwise",
)
CLASSIFICATION_PREFIXES = ("binary:", "multi:")
ALIASES = {"reg:linear": "reg:squarederror"}  # SageMaker still accepts the pre-1.0 name

# Native XGBoost metrics (``@t`` thresholds allowed on error, ndcg, map, pre) and the ones SageMaker's container
# computes itself; ours are computed exactly across workers (see .metrics).
NATIVE_METRICS = (
    "rmse", "rmsle", "mae", "mape", "mphe", "logloss", "error", "merror", "mlogloss", "auc", "aucpr", "pre",
    "ndcg", "map", "poisson-nloglik", "gamma-nloglik", "cox-nloglik", "gamma-deviance", "tweedie-nloglik",
    "aft-nloglik", "interval-regression-accuracy", "quantile",
)
SAGEMAKER_METRICS = (
    "accuracy", "balanced_accuracy", "f1", "f1_binary", "f1_macro", "mse", "precision", "precision_macro",
    "precision_micro", "r2", "recall", "recall_macro", "recall_micro",
)
MAXIMIZED = ("auc", "aucpr", "pre", "ndcg", "map", "interval-regression-accuracy", "accuracy", "balanced_accuracy",
             "f1", "f1_binary", "f1_macro", "precision", "precision_macro", "precision_micro", "r2", "recall",
             "recall_macro", "recall_micro")
_THRESHOLD_METRICS = ("error", "ndcg", "map", "pre")

UPDATERS = ("grow_colmaker", "distcol", "grow_histmaker", "grow_local_histmaker", "grow_skmaker", "sync", "refresh",
            "prune", "grow_quantile_histmaker", "shotgun", "coord_descent")
_TREE_BUILDERS = ("grow_colmaker", "distcol", "grow_histmaker", "grow_local_histmaker", "grow_skmaker",
                  "grow_quantile_histmaker")

# Accepted for SageMaker compatibility, not passed to XGBoost 2+ (which removed them).
LEGACY = ("sketch_eps", "dsplit", "predictor", "single_precision_histogram", "deterministic_histogram",
          "prob_buffer_row", "lambda_bias", "save_model_on_termination")
# Hyperparameters this module acts on itself rather than passing to xgboost.train's params.
CONTROL = ("num_round", "csv_weights", "early_stopping_rounds", "eval_metric", "nthread", "verbosity")

SPEC = HyperparameterSpec([
    H("num_round", int, required=True, low=1, doc="boosting rounds (required)"),
    H("objective", str, "reg:squarederror", choices=OBJECTIVES, doc="learning objective"),
    H("num_class", int, low=2, doc="number of classes (required for multi:softmax and multi:softprob)"),
    H("eval_metric", list, doc="evaluation metrics, comma separated (default: the objective's)"),
    H("early_stopping_rounds", int, low=1, doc="stop when the last evaluation set's last metric has not "
      "improved for this many rounds; the best iteration is kept"),
    H("csv_weights", int, 0, low=0, high=1, doc="1: CSV channels hold the instance weight in column 2"),
    H("booster", str, "gbtree", choices=("gbtree", "gblinear", "dart")),
    H("verbosity", int, 1, low=0, high=3),
    H("nthread", int, low=1, doc="threads per worker (default: the CPUs Spark gave the task)"),
    H("eta", float, 0.3, low=0, high=1, doc="learning rate"),
    H("gamma", float, 0.0, low=0, doc="minimum loss reduction to split"),
    H("max_depth", int, 6, low=0),
    H("min_child_weight", float, 1.0, low=0),
    H("max_delta_step", float, 0.0, low=0),
    H("subsample", float, 1.0, low=0, high=1, low_open=True),
    H("sampling_method", str, choices=("uniform", "gradient_based")),
    H("colsample_bytree", float, 1.0, low=0, high=1, low_open=True),
    H("colsample_bylevel", float, 1.0, low=0, high=1, low_open=True),
    H("colsample_bynode", float, 1.0, low=0, high=1, low_open=True),
    H("lambda", float, 1.0, low=0, param_name="regLambda", doc="L2 regularization"),
    H("alpha", float, 0.0, low=0, doc="L1 regularization"),
    H("tree_method", str, "auto", choices=("auto", "exact", "approx", "hist", "gpu_hist")),
    H("scale_pos_weight", float, low=0, low_open=True, doc="weight of positive examples (default 1)"),
    H("updater", list),
    H("refresh_leaf", int, low=0, high=1),
    H("process_type", str, choices=("default", "update")),
    H("grow_policy", str, "depthwise", choices=("depthwise", "lossguide")),
    H("max_leaves", int, 0, low=0),
    H("max_bin", int, 256, low=2),
    H("num_parallel_tree", int, low=1),
    H("monotone_constraints", str, doc="one of -1, 0, 1 per feature, e.g. (1,0,-1)"),
    H("interaction_constraints", str, doc="lists of feature indices allowed to interact, e.g. [[0,1],[2,3]]"),
    H("sample_type", str, choices=("uniform", "weighted")),
    H("normalize_type", str, choices=("tree", "forest")),
    H("rate_drop", float, low=0, high=1),
    H("one_drop", int, low=0, high=1),
    H("skip_drop", float, low=0, high=1),
    H("tweedie_variance_power", float, low=1, high=2, low_open=True, high_open=True, doc="reg:tweedie (default 1.5)"),
    H("huber_slope", float, low=0, low_open=True),
    H("quantile_alpha", float, low=0, high=1, low_open=True, high_open=True),
    H("aft_loss_distribution", str, choices=("normal", "logistic", "extreme")),
    H("aft_loss_distribution_scale", float, low=0, low_open=True),
    H("lambdarank_pair_method", str, choices=("mean", "topk")),
    H("lambdarank_num_pair_per_sample", int, low=1),
    H("base_score", float, doc="initial prediction (default: estimated from the labels)"),
    H("seed", int, 0, low=-(2 ** 31), high=2 ** 31 - 1, low_open=True, high_open=True),
    H("sketch_eps", float, low=0, high=1, low_open=True, high_open=True, doc="no effect in XGBoost 2+ (use max_bin)"),
    H("dsplit", str, choices=("row", "col"), doc="no effect in XGBoost 2+"),
    H("predictor", str, choices=("auto", "cpu_predictor", "gpu_predictor"), doc="no effect in XGBoost 2+"),
    H("single_precision_histogram", bool, doc="no effect in XGBoost 2+"),
    H("deterministic_histogram", bool, doc="no effect in XGBoost 2+"),
    H("prob_buffer_row", float, doc="no effect in XGBoost 2+"),
    H("lambda_bias", float, low=0, high=1, doc="no effect in XGBoost 2+"),
    H("save_model_on_termination", bool, doc="no effect here: a stopped job leaves no model"),
])


@dataclass(frozen=True)
class XGBConfig:
    """What training needs beyond xgboost.train's params."""

    params: dict[str, Any]
    num_round: int
    objective: str
    num_class: int | None
    early_stopping_rounds: int | None
    native_metrics: list[str]
    sagemaker_metrics: list[str]
    metrics_order: list[str]  # as the user listed them; early stopping watches the last one
    csv_weights: bool
    wants_gpu: bool  # tree_method gpu_hist

    @property
    def quantile_friendly(self) -> bool:
        """hist-based training (QuantileDMatrix); exact/approx and gblinear take a plain DMatrix."""
        return self.params.get("tree_method", "hist") == "hist" and self.params.get("booster", "gbtree") != "gblinear"


def objective_of(hp: dict[str, Any]) -> str:
    objective = hp.get("objective") or "reg:squarederror"
    return ALIASES.get(objective, objective)


def is_classification(objective: str) -> bool:
    return objective.startswith(CLASSIFICATION_PREFIXES)


def check(hp: dict[str, Any], tuning_metric: str | None = None) -> dict[str, Any]:
    """Cross-checks SageMaker's container makes, as HyperparameterError naming the hyperparameter."""
    objective = objective_of(hp)
    num_class = hp.get("num_class")
    if objective.startswith("multi:") and num_class is None:
        raise HyperparameterError("num_class", f"is required for objective {objective}")
    if num_class is not None and not objective.startswith("multi:"):
        raise HyperparameterError("num_class", f"applies to multi:softmax and multi:softprob only, but the "
                                  f"objective is {objective}")
    for metric in hp.get("eval_metric") or []:
        _check_metric(metric, objective)
    if tuning_metric:
        _, _, name = tuning_metric.partition(":")
        _check_metric(name, objective, "_tuning_objective_metric")
    tree_method = hp.get("tree_method") or "auto"
    if hp.get("monotone_constraints") is not None:
        _parse_monotone(hp["monotone_constraints"])
        if tree_method not in ("auto", "exact", "hist", "approx", "gpu_hist"):
            raise HyperparameterError("monotone_constraints", "needs tree_method exact, hist or approx")
    if hp.get("interaction_constraints") is not None:
        _parse_interactions(hp["interaction_constraints"])
        if tree_method not in ("auto", "exact", "hist", "approx", "gpu_hist"):
            raise HyperparameterError("interaction_constraints", "needs tree_method exact, hist or approx")
    if hp.get("grow_policy") == "lossguide" and tree_method == "exact":
        raise HyperparameterError("grow_policy", "lossguide needs tree_method hist or approx, not exact")
    if hp.get("updater"):
        _check_updater(hp["updater"], hp.get("booster") or "gbtree", hp.get("process_type"))
    if hp.get("aft_loss_distribution") is not None and objective != "survival:aft":
        raise HyperparameterError("aft_loss_distribution", "applies to objective survival:aft only")
    return hp


def _check_metric(metric: str, objective: str, name: str = "eval_metric") -> None:
    base, at, threshold = metric.partition("@")
    if at:
        if base not in _THRESHOLD_METRICS:
            raise HyperparameterError(name, f"{metric!r}: a threshold (@t) applies to "
                                      f"{', '.join(_THRESHOLD_METRICS)} only")
        if threshold.rstrip("-") and not re.fullmatch(r"[0-9.eE+-]+-?", threshold):
            raise HyperparameterError(name, f"{metric!r}: the threshold after @ must be a number")
    elif base not in NATIVE_METRICS + SAGEMAKER_METRICS:
        raise HyperparameterError(name, f"{metric!r} is not a metric XGBoost or SageMaker computes (one of "
                                  f"{', '.join(NATIVE_METRICS + SAGEMAKER_METRICS)})")
    if base in ("auc", "aucpr") and not objective.startswith(("binary:", "multi:", "rank:")):
        raise HyperparameterError(name, f"{base} applies to classification and ranking, not {objective}")
    if base == "aft-nloglik" and objective != "survival:aft":
        raise HyperparameterError(name, "aft-nloglik applies to objective survival:aft only")
    classification = ("accuracy", "balanced_accuracy", "f1", "f1_binary", "f1_macro", "precision",
                      "precision_macro", "precision_micro", "recall", "recall_macro", "recall_micro")
    if base in classification and not is_classification(objective):
        raise HyperparameterError(name, f"{base} applies to binary:* and multi:* objectives, not {objective}")
    if base in ("f1_binary",) and objective.startswith("multi:"):
        raise HyperparameterError(name, "f1_binary applies to binary objectives; use f1_macro for multi:*")


def _parse_monotone(text: str) -> list[int]:
    body = text.strip().strip("()[]")
    try:
        values = [int(v) for v in body.split(",") if v.strip()]
    except ValueError:
        values = None
    if not values or any(v not in (-1, 0, 1) for v in values):
        raise HyperparameterError("monotone_constraints", f"must list -1, 0 or 1 per feature, e.g. (1,0,-1); "
                                  f"got {text!r}")
    return values


def _parse_interactions(text: str) -> list[list[int]]:
    try:
        groups = json.loads(text)
        ok = isinstance(groups, list) and all(
            isinstance(g, list) and all(isinstance(i, int) and i >= 0 for i in g) for g in groups)
    except ValueError:
        ok = False
    if not ok:
        raise HyperparameterError("interaction_constraints", "must be lists of feature indices, e.g. [[0,1],[2,3]]; "
                                  f"got {text!r}")
    return groups


def _check_updater(updaters: list[str], booster: str, process_type: str | None) -> None:
    unknown = [u for u in updaters if u not in UPDATERS]
    if unknown:
        raise HyperparameterError("updater", f"{unknown[0]!r} is not an updater (one of {', '.join(UPDATERS)})")
    if booster == "gblinear":
        if len(updaters) != 1 or updaters[0] not in ("shotgun", "coord_descent"):
            raise HyperparameterError("updater", "gblinear takes one of shotgun, coord_descent")
    elif process_type == "update":
        if any(u not in ("refresh", "prune") for u in updaters):
            raise HyperparameterError("updater", "process_type update takes refresh and prune only")
    elif sum(u in _TREE_BUILDERS for u in updaters) > 1:
        raise HyperparameterError("updater", "choose one tree-growing updater")


def xgboost_config(hp: dict[str, Any], num_cpus: int, device: str, tuning_metric: str | None = None) -> XGBConfig:
    """xgboost.train params (XGBoost's names) and the training settings, from parsed hyperparameters."""
    check(hp, tuning_metric)
    objective = objective_of(hp)
    params: dict[str, Any] = {}
    for name, value in hp.items():
        if value is None or name in CONTROL or name in LEGACY:
            continue
        params[name] = value
    params["objective"] = objective
    if "updater" in params:
        params["updater"] = ",".join(params["updater"])
    if "monotone_constraints" in params:
        signs = _parse_monotone(hp["monotone_constraints"])
        params["monotone_constraints"] = "(" + ",".join(str(v) for v in signs) + ")"
    wants_gpu = params.get("tree_method") == "gpu_hist"
    if params.get("tree_method") in ("gpu_hist", "auto"):
        params["tree_method"] = "hist"  # XGBoost 2+: auto means hist; gpu_hist is hist on device cuda
    params["device"] = device
    params["nthread"] = hp.get("nthread") or max(1, int(num_cpus))
    params["verbosity"] = hp.get("verbosity") if hp.get("verbosity") is not None else 1
    order = list(hp.get("eval_metric") or [])
    if tuning_metric:
        name = tuning_metric.partition(":")[2]
        order = [m for m in order if m != name] + [name]  # early stopping watches the tuning objective
    native = [m for m in order if m.partition("@")[0] not in SAGEMAKER_METRICS]
    if native:
        params["eval_metric"] = native
    return XGBConfig(params=params, num_round=int(hp["num_round"]), objective=objective,
                     num_class=hp.get("num_class"), early_stopping_rounds=hp.get("early_stopping_rounds"),
                     native_metrics=native, sagemaker_metrics=[m for m in order if m in SAGEMAKER_METRICS],
                     metrics_order=order, csv_weights=bool(hp.get("csv_weights")), wants_gpu=wants_gpu)


def is_maximized(metric: str) -> bool:
    return metric.partition("@")[0] in MAXIMIZED

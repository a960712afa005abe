"""Linear Learner's hyperparameters (SageMaker's names, defaults and ranges) and how ``auto`` resolves.

Ranges follow SageMaker's SDK validators and the algorithm's documentation; cross-field rules
(``num_classes`` for multiclass, the losses each ``predictor_type`` accepts) are checked in
:func:`check`, so a bad combination fails before any data is read.

How each ``auto`` resolves (SageMaker does not publish all of these; the choices are ours):

- ``optimizer``: adam. ``learning_rate``: 0.01 for adam and sgd, 0.003 for rmsprop (the rate of model
  0; the other models try it x sqrt(10), / sqrt(10) and x 10, see :mod:`.grid`).
- ``wd``, ``l1``: 0 for the anchor model; the other models explore nearby values (:mod:`.grid`).
- ``momentum``: 0.9 for sgd, 0 for rmsprop. ``beta_1`` 0.9, ``beta_2`` 0.999 (adam); rmsprop's
  squared-gradient decay is ``beta_2`` (auto 0.99).
- ``bias_lr_mult``: 1. ``bias_wd_mult``: 0 (the bias is not regularized, as SageMaker documents).
- ``lr_scheduler_step``: one epoch of updates; ``lr_scheduler_factor``: 0.9;
  ``lr_scheduler_minimum_lr``: 1/100 of each model's starting rate.
- ``normalize_label``: on for regression only. ``unbias_data``: ``use_bias``. ``unbias_label``:
  ``use_bias`` for regression.
- ``num_models``: 32 (what SageMaker was observed to train), fewer when the weight matrix
  ``feature_dim x num_models x classes`` would pass ``MAX_WEIGHTS`` entries.
- ``num_calibration_samples``: 10,000,000, the container's default.
- ``positive_example_weight_mult``: ``auto`` lets the models try 1, the balancing weight and their
  geometric mean; ``balanced`` uses negatives / positives from the scaler sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...hyperparameters import AUTO, Hyperparameter, HyperparameterError, HyperparameterSpec
from .losses import ALL_LOSSES, ALLOWED_LOSSES, DEFAULT_LOSS

PREDICTOR_TYPES = ("binary_classifier", "multiclass_classifier", "regressor")
SELECTION_CRITERIA = (
    "accuracy",
    "f_beta",
    "precision_at_target_recall",
    "recall_at_target_precision",
    "loss_function",
    "f1",
    "cross_entropy_loss",
)
DEFAULT_NUM_MODELS = 32
MAX_WEIGHTS = 1 << 24  # entries of the (feature_dim, num_models * classes) weight matrix
MAX_LOGITS_PER_ROW = 1 << 16  # num_models * classes
DEFAULT_CALIBRATION_SAMPLES = 10_000_000
_ANCHOR_LR = {"adam": 0.01, "rmsprop": 0.003, "sgd": 0.01}


class PositiveWeight(Hyperparameter):
    """``positive_example_weight_mult``: a number > 0, ``balanced`` or ``auto``."""

    def describe(self) -> str:
        return "a number > 0, balanced or auto"

    def parse(self, raw: Any) -> Any:
        text = str(raw).strip().lower()
        if text in (AUTO, "balanced"):
            return text
        try:
            value = float(text)
        except ValueError:
            raise HyperparameterError(self.name, f"must be {self.describe()}, got {raw!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise HyperparameterError(self.name, f"must be {self.describe()}, got {raw!r}")
        return value

    def format(self, value: Any) -> str:
        return str(value)


def _float(name, default=AUTO, low=None, high=None, low_open=False, high_open=False, auto=True, doc=""):
    return Hyperparameter(
        name, float, default, low=low, high=high, low_open=low_open, high_open=high_open, auto=auto, doc=doc
    )


def _int(name, default, low=1, high=None, auto=False, doc=""):
    return Hyperparameter(name, int, default, low=low, high=high, auto=auto, doc=doc)


def _bool(name, default, auto=False, doc=""):
    return Hyperparameter(name, bool, default, auto=auto, doc=doc)


SPEC = HyperparameterSpec(
    [
        Hyperparameter(
            "predictor_type",
            str,
            required=True,
            choices=PREDICTOR_TYPES,
            doc="binary_classifier, multiclass_classifier or regressor",
        ),
        _int(
            "num_classes",
            None,
            low=1,
            high=1_000_000,
            doc="classes of a multiclass_classifier (3..1,000,000)",
        ),
        _int("feature_dim", AUTO, auto=True, doc="features per record; inferred from the train channel"),
        _int("epochs", 15, doc="maximum passes over the training data"),
        _int("mini_batch_size", 1000, doc="records per mini-batch on each worker"),
        Hyperparameter("loss", str, AUTO, choices=ALL_LOSSES + (AUTO,), doc="loss function"),
        Hyperparameter(
            "optimizer", str, AUTO, choices=("sgd", "adam", "rmsprop", AUTO), doc="auto means adam"
        ),
        _float("learning_rate", low=0, low_open=True),
        _float("wd", low=0, doc="L2 regularization"),
        _float("l1", low=0, doc="L1 regularization"),
        _float("momentum", low=0, high=1, high_open=True),
        _float("beta_1", low=0, high=1, high_open=True),
        _float("beta_2", low=0, high=1, high_open=True),
        _float("bias_lr_mult", low=0, low_open=True),
        _float("bias_wd_mult", low=0),
        _bool("use_lr_scheduler", True),
        _int("lr_scheduler_step", AUTO, auto=True),
        _float("lr_scheduler_factor", low=0, high=1, low_open=True, high_open=True),
        _float("lr_scheduler_minimum_lr", low=0, low_open=True),
        _bool("use_bias", True),
        Hyperparameter("init_method", str, "uniform", choices=("uniform", "normal")),
        _float("init_scale", 0.07, low=0, low_open=True, auto=False),
        _float("init_sigma", 0.01, low=0, low_open=True, auto=False),
        _float("init_bias", 0.0, auto=False),
        _bool("normalize_data", True, auto=True),
        _bool("normalize_label", AUTO, auto=True),
        _bool("unbias_data", AUTO, auto=True),
        _bool("unbias_label", AUTO, auto=True),
        _int("num_point_for_scaler", 10_000),
        _int("num_models", AUTO, auto=True),
        _int("num_calibration_samples", AUTO, auto=True),
        Hyperparameter(
            "binary_classifier_model_selection_criteria", str, "accuracy", choices=SELECTION_CRITERIA
        ),
        _float("target_recall", 0.8, low=0, high=1, low_open=True, high_open=True, auto=False),
        _float("target_precision", 0.8, low=0, high=1, low_open=True, high_open=True, auto=False),
        _float("f_beta", 1.0, low=0, low_open=True, auto=False),
        PositiveWeight("positive_example_weight_mult", str, 1.0),
        _int("early_stopping_patience", 3),
        _float("early_stopping_tolerance", 0.001, low=0, low_open=True, auto=False),
        _float("margin", 1.0, low=0, auto=False),
        _float("quantile", 0.5, low=0, high=1, low_open=True, high_open=True, auto=False),
        _float("loss_insensitivity", 0.01, low=0, low_open=True, auto=False),
        _float("huber_delta", 1.0, low=0, auto=False),
        _int("accuracy_top_k", 3, low=1, high=1_000_000),
        _bool("balance_multiclass_weights", False),
    ]
)


def check(hp: dict[str, Any]) -> dict[str, Any]:
    """Cross-field rules on parsed hyperparameters; returns them with ``loss`` resolved."""
    ptype = hp["predictor_type"]
    if ptype == "multiclass_classifier":
        classes = hp.get("num_classes")
        if classes is None:
            raise HyperparameterError(
                "num_classes",
                "is required when predictor_type is multiclass_classifier (an integer in [3, 1000000])",
            )
        if classes < 3:
            raise HyperparameterError(
                "num_classes",
                f"must be in [3, 1000000] for a multiclass_classifier, got "
                f"{classes} (use predictor_type binary_classifier for two classes)",
            )
    loss = hp["loss"]
    if loss == AUTO:
        loss = DEFAULT_LOSS[ptype]
    elif loss not in ALLOWED_LOSSES[ptype]:
        raise HyperparameterError(
            "loss",
            f"{loss} is not a loss for a {ptype}; use one of {', '.join(ALLOWED_LOSSES[ptype])} or auto",
        )
    if loss == "huber_loss" and hp["huber_delta"] == 0:
        raise HyperparameterError("huber_delta", "must be > 0 with huber_loss (with 0 the loss is flat)")
    out = dict(hp)
    out["loss"] = loss
    return out


@dataclass(frozen=True)
class LinearConfig:
    """Every setting training uses, with ``auto`` resolved."""

    predictor_type: str
    loss: str
    num_classes: int  # 1 for binary and regression (one output column per model)
    feature_dim: int
    num_models: int
    epochs: int
    mini_batch_size: int
    optimizer: str
    learning_rate: float
    learning_rate_auto: bool
    wd: float
    l1: float
    momentum: float
    beta_1: float
    beta_2: float
    bias_lr_mult: float
    bias_wd_mult: float
    use_lr_scheduler: bool
    lr_scheduler_step: int | None  # None: once per epoch
    lr_scheduler_factor: float
    lr_scheduler_minimum_lr: float | None  # None: 1/100 of each model's starting rate
    use_bias: bool
    init_method: str
    init_scale: float
    init_sigma: float
    init_bias: float
    normalize_data: bool
    unbias_data: bool
    normalize_label: bool
    unbias_label: bool
    num_point_for_scaler: int
    num_calibration_samples: int
    selection_criteria: str
    target_recall: float
    target_precision: float
    f_beta: float
    positive_example_weight_mult: float | str
    balance_multiclass_weights: bool
    early_stopping_patience: int
    early_stopping_tolerance: float
    margin: float
    quantile: float
    loss_insensitivity: float
    huber_delta: float
    accuracy_top_k: int

    @property
    def outputs_per_model(self) -> int:
        return self.num_classes if self.predictor_type == "multiclass_classifier" else 1


def linear_config(hp: dict[str, Any], feature_dim: int) -> LinearConfig:
    """The training configuration from checked hyperparameters (see the module docstring for ``auto``)."""
    hp = check(hp)
    ptype = hp["predictor_type"]
    classes = int(hp["num_classes"]) if ptype == "multiclass_classifier" else 1
    optimizer = "adam" if hp["optimizer"] == AUTO else hp["optimizer"]
    use_bias = bool(hp["use_bias"])
    regression = ptype == "regressor"

    def auto(name, value):
        return value if hp[name] == AUTO else hp[name]

    num_models = hp["num_models"]
    if num_models == AUTO:
        per_model = max(1, feature_dim * classes)
        num_models = max(1, min(DEFAULT_NUM_MODELS, MAX_WEIGHTS // per_model, MAX_LOGITS_PER_ROW // classes))
    criteria = hp["binary_classifier_model_selection_criteria"]
    criteria = {"f1": "f_beta", "cross_entropy_loss": "loss_function"}.get(criteria, criteria)
    f_beta = 1.0 if hp["binary_classifier_model_selection_criteria"] == "f1" else float(hp["f_beta"])
    normalize_label = auto("normalize_label", regression) and regression
    return LinearConfig(
        predictor_type=ptype,
        loss=hp["loss"],
        num_classes=classes,
        feature_dim=int(feature_dim),
        num_models=int(num_models),
        epochs=int(hp["epochs"]),
        mini_batch_size=int(hp["mini_batch_size"]),
        optimizer=optimizer,
        learning_rate=float(auto("learning_rate", _ANCHOR_LR[optimizer])),
        learning_rate_auto=hp["learning_rate"] == AUTO,
        wd=float(auto("wd", 0.0)),
        l1=float(auto("l1", 0.0)),
        momentum=float(auto("momentum", 0.9 if optimizer == "sgd" else 0.0)),
        beta_1=float(auto("beta_1", 0.9)),
        beta_2=float(auto("beta_2", 0.99 if optimizer == "rmsprop" else 0.999)),
        bias_lr_mult=float(auto("bias_lr_mult", 1.0)),
        bias_wd_mult=float(auto("bias_wd_mult", 0.0)),
        use_lr_scheduler=bool(hp["use_lr_scheduler"]),
        lr_scheduler_step=None if hp["lr_scheduler_step"] == AUTO else int(hp["lr_scheduler_step"]),
        lr_scheduler_factor=float(auto("lr_scheduler_factor", 0.9)),
        lr_scheduler_minimum_lr=None
        if hp["lr_scheduler_minimum_lr"] == AUTO
        else float(hp["lr_scheduler_minimum_lr"]),
        use_bias=use_bias,
        init_method=hp["init_method"],
        init_scale=float(hp["init_scale"]),
        init_sigma=float(hp["init_sigma"]),
        init_bias=float(hp["init_bias"]),
        normalize_data=bool(auto("normalize_data", True)),
        unbias_data=bool(auto("unbias_data", use_bias)),
        normalize_label=bool(normalize_label),
        unbias_label=bool(auto("unbias_label", use_bias)) and regression,
        num_point_for_scaler=int(hp["num_point_for_scaler"]),
        num_calibration_samples=int(auto("num_calibration_samples", DEFAULT_CALIBRATION_SAMPLES)),
        selection_criteria=criteria,
        target_recall=float(hp["target_recall"]),
        target_precision=float(hp["target_precision"]),
        f_beta=f_beta,
        positive_example_weight_mult=hp["positive_example_weight_mult"],
        balance_multiclass_weights=bool(hp["balance_multiclass_weights"])
        and ptype == "multiclass_classifier",
        early_stopping_patience=int(hp["early_stopping_patience"]),
        early_stopping_tolerance=float(hp["early_stopping_tolerance"]),
        margin=float(hp["margin"]),
        quantile=float(hp["quantile"]),
        loss_insensitivity=float(hp["loss_insensitivity"]),
        huber_delta=float(hp["huber_delta"]),
        accuracy_top_k=int(hp["accuracy_top_k"]),
    )

"""The trained XGBoost model: a plain booster in XGBoost's UBJSON format, and SageMaker's response keys.

The artifact's ``xgboost-model`` (SageMaker's file name) loads with ``xgboost.Booster(model_file=...)``.
``predict`` answers SageMaker's ``score``: the booster's prediction (probability for binary:logistic, a
vector of class probabilities for multi:softprob, the class for multi:softmax, the value for regression).
``configured(outputs=[...])`` selects more outputs, as the Spark model does:

- ``prediction``: the predicted class (classification) or value;
- ``probability``: class probabilities as a vector (``[1-p, p]`` for binary);
- ``rawPrediction``: margins as a vector (``[-m, m]`` for binary), what Spark's evaluators read;
- ``leaf``: the leaf index of each tree; ``contrib``: SHAP contributions per feature plus the bias (last),
  for multiclass one such block per class.
"""

from __future__ import annotations

import json
import os

import numpy as np
import scipy.sparse as sp
import xgboost as xgb

from ...batch import Batch
from ..base import Model, Output

MODEL_FILE = "xgboost-model"
SCORE = "score"
EXTRA_OUTPUTS = ("prediction", "probability", "rawPrediction", "leaf", "contrib")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class XGBoostModel(Model):
    algorithm = "xgboost"

    def __init__(self, hyperparameters: dict[str, str], feature_dim: int, booster: xgb.Booster,
                 outputs: tuple[str, ...] = (SCORE,)):
        super().__init__(hyperparameters, feature_dim)
        self.booster = booster
        learner = json.loads(booster.save_config())["learner"]
        self.objective: str = learner["objective"]["name"]
        self.num_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
        self.best_iteration = booster.attr("best_iteration")
        self._selected = tuple(outputs)
        for name in self._selected:
            if name not in self.available_outputs():
                raise ValueError(f"output {name!r} is not available for objective {self.objective} "
                                 f"(available: {', '.join(self.available_outputs())})")

    # outputs --------------------------------------------------------------------------------------------
    @property
    def is_classifier(self) -> bool:
        return self.objective.startswith(("binary:", "multi:"))

    def available_outputs(self) -> tuple[str, ...]:
        names = [SCORE, "prediction"]
        if self.is_classifier:
            if self.objective != "binary:hinge":
                names.append("probability")
            names.append("rawPrediction")
        return (*names, "leaf", "contrib")

    @property
    def outputs(self) -> tuple[Output, ...]:  # type: ignore[override]
        vector_score = self.objective == "multi:softprob"
        kinds = {SCORE: "vector" if vector_score else "scalar", "prediction": "scalar", "probability": "vector",
                 "rawPrediction": "vector", "leaf": "vector", "contrib": "vector"}
        return tuple(Output(name, kinds[name]) for name in self._selected)

    def configured(self, outputs: list[str] | tuple[str, ...] | None = None, **unknown) -> XGBoostModel:
        """The same booster answering other outputs (see the module docstring)."""
        if unknown:
            raise ValueError(f"XGBoost scoring options are: outputs; got {', '.join(sorted(unknown))}")
        return XGBoostModel(self.hyperparameters, self.feature_dim, self.booster,
                            tuple(outputs) if outputs else (SCORE,))

    # prediction -----------------------------------------------------------------------------------------
    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        x = batch.features
        if not sp.issparse(x) and x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        wanted = set(self._selected)
        out: dict[str, np.ndarray] = {}
        n = batch.num_rows
        if n == 0:
            return self._empty(wanted)
        if wanted & {"prediction", "probability", "rawPrediction", SCORE}:
            # one pass over the trees: the margin when the answer derives from it (or a classifier needs it)
            transform = _TRANSFORMS.get(self.objective)
            margin = self.booster.inplace_predict(x, predict_type="margin") \
                if transform is not None or self.is_classifier else None
            value = transform(margin) if transform is not None else self.booster.inplace_predict(x)
            if SCORE in wanted:
                out[SCORE] = value
            if self.is_classifier:
                margins = margin.reshape(n, -1)
                if margins.shape[1] == 1:
                    m = margins[:, 0]
                    probability = _sigmoid(m)
                    predicted = (value > 0.5) if self.objective in ("binary:logistic", "binary:hinge") else (m > 0)
                    raw = np.stack([-m, m], axis=1)
                    probabilities = np.stack([1 - probability, probability], axis=1)
                else:
                    probabilities = _softmax(margins)
                    predicted = np.argmax(margins, axis=1)
                    raw = margins
                if "prediction" in wanted:
                    out["prediction"] = predicted.astype(np.float64)
                if "probability" in wanted:
                    out["probability"] = probabilities
                if "rawPrediction" in wanted:
                    out["rawPrediction"] = raw
            elif "prediction" in wanted:
                out["prediction"] = np.asarray(value, np.float64).reshape(n, -1)[:, 0]
        if wanted & {"leaf", "contrib"}:
            matrix = xgb.DMatrix(x, missing=np.nan, nthread=1)
            if "leaf" in wanted:
                out["leaf"] = self.booster.predict(matrix, pred_leaf=True).reshape(n, -1).astype(np.float64)
            if "contrib" in wanted:
                out["contrib"] = self.booster.predict(matrix, pred_contribs=True).reshape(n, -1)
        return out

    def _empty(self, wanted: set[str]) -> dict[str, np.ndarray]:
        widths = {o.name: (0 if o.kind == "scalar" else 1) for o in self.outputs}
        return {name: np.zeros((0,) if widths[name] == 0 else (0, 1)) for name in wanted}

    # persistence ----------------------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        with open(os.path.join(directory, MODEL_FILE), "wb") as f:
            f.write(self.booster.save_raw("ubj"))

    @classmethod
    def load(cls, directory: str, manifest) -> XGBoostModel:
        with open(os.path.join(directory, MODEL_FILE), "rb") as f:
            booster = booster_from_bytes(f.read())
        return cls(manifest.hyperparameters, manifest.feature_dim, booster)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"booster_ubj": np.frombuffer(self.booster.save_raw("ubj"), np.uint8).copy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], hyperparameters: dict[str, str],
                    feature_dim: int) -> XGBoostModel:
        return cls(hyperparameters, feature_dim, booster_from_bytes(arrays["booster_ubj"].tobytes()))


def booster_from_bytes(data: bytes) -> xgb.Booster:
    """A booster from UBJSON or JSON bytes (XGBoost's own formats; nothing is unpickled)."""
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    return booster


# Objectives whose value is a function of the margin: computed from it rather than predicting twice.
_TRANSFORMS = {
    "binary:logistic": _sigmoid,
    "reg:logistic": _sigmoid,
    "binary:logitraw": lambda m: m,
    "reg:squarederror": lambda m: m,
    "multi:softprob": lambda m: _softmax(m.reshape(len(m), -1)),
    "multi:softmax": lambda m: np.argmax(m.reshape(len(m), -1), axis=1).astype(np.float32),
    "count:poisson": np.exp,
    "reg:gamma": np.exp,
    "reg:tweedie": np.exp,
}

"""Spark ML Params derived from an algorithm's hyperparameter declarations, and the common ones.

Every SageMaker hyperparameter becomes a camelCase Param (``mini_batch_size`` → ``miniBatchSize``) with a
type converter that validates through the same declaration the worker uses, so a bad value fails when it
is set, naming the Param, the hyperparameter and what it accepts.
"""

from __future__ import annotations

from typing import Any

from pyspark.ml.param import Param, Params, TypeConverters

from algorithms.hyperparameters import Hyperparameter, HyperparameterError, HyperparameterSpec


class ParamError(ValueError):
    pass


def hyperparameter_converter(hp: Hyperparameter):
    def convert(value: Any) -> Any:
        try:
            parsed = hp.parse(value)
        except HyperparameterError as exc:
            raise ParamError(f"Param {hp.param_name} ({hp.name}): {exc.problem}") from None
        return parsed

    return convert


def hyperparameter_param(hp: Hyperparameter) -> Param:
    doc = hp.doc or f"SageMaker hyperparameter {hp.name}: {hp.describe()}"
    if hp.default is not None:
        doc += f" (default {hp.format(hp.default)})"
    return Param(Params._dummy(), hp.param_name, doc, typeConverter=hyperparameter_converter(hp))


def _positive_int(name: str):
    def convert(value):
        number = TypeConverters.toInt(value)
        if number < 1:
            raise ParamError(f"Param {name} must be an integer ≥ 1, got {value!r}")
        return number

    return convert


def _non_negative_float(name: str):
    def convert(value):
        number = TypeConverters.toFloat(value)
        if number < 0:
            raise ParamError(f"Param {name} must be ≥ 0, got {value!r}")
        return number

    return convert


class CommonParams(Params):
    """Params every spark_ml estimator and model shares."""

    featuresCol = Param(Params._dummy(), "featuresCol", "features column: a vector or array<float|double>",
                        typeConverter=TypeConverters.toString)
    labelCol = Param(Params._dummy(), "labelCol", "label column (supervised algorithms)",
                     typeConverter=TypeConverters.toString)
    numWorkers = Param(Params._dummy(), "numWorkers", "training workers (one barrier task each)",
                       typeConverter=_positive_int("numWorkers"))
    gpusPerWorker = Param(Params._dummy(), "gpusPerWorker", "GPUs each worker asks Spark for (0 = CPU)",
                          typeConverter=_non_negative_float("gpusPerWorker"))
    modelStore = Param(Params._dummy(), "modelStore", "where models go: a folder or URI (default "
                       "$SPARK_ML_HOME/models locally)", typeConverter=TypeConverters.toString)
    stagingDir = Param(Params._dummy(), "stagingDir", "where DataFrames are written as channels before "
                       "training: a folder or URI every executor can read", typeConverter=TypeConverters.toString)
    deleteStagingData = Param(Params._dummy(), "deleteStagingData", "remove the channels written from "
                              "DataFrames once training ends", typeConverter=TypeConverters.toBoolean)
    showProgress = Param(Params._dummy(), "showProgress", "show a live progress bar while training",
                         typeConverter=TypeConverters.toBoolean)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(featuresCol="features", labelCol="label", numWorkers=1, gpusPerWorker=0.0,
                         deleteStagingData=True, showProgress=True)


def declared_params(spec: HyperparameterSpec, skip: set[str]) -> dict[str, tuple[Param, Hyperparameter]]:
    return {hp.param_name: (hyperparameter_param(hp), hp) for hp in spec if hp.name not in skip}

"""One generic Estimator/Model skeleton; each built-in declares only its algorithm (and fixed hyperparameters).

``fit`` validates every Param, turns DataFrames into channels (or takes channels as they are), runs one
barrier stage through the runner and returns a Model holding the artifact. ``transform`` scores inside
the executors over Arrow batches and adds SageMaker's output columns.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, ClassVar

from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame, SparkSession

from algorithms import builtin
from algorithms import fs as fsutil
from algorithms.artifact import fetch, read_manifest
from algorithms.channel import Channel
from algorithms.hyperparameters import AUTO, HyperparameterError, HyperparameterSpec

from ..channels import to_channel
from ..runner import TrainingRequest, TrainingResult, run_training
from .locations import default_model_store, default_staging_dir
from .params import CommonParams, ParamError, declared_params
from .scoring import score_dataframe


class SageMakerEstimator(Estimator, CommonParams, MLWritable, MLReadable):
    """Base of every built-in estimator. Subclasses set ``_algorithm``, ``_model_class`` and maybe ``_fixed``."""

    _algorithm: ClassVar[str]
    _model_class: ClassVar[type[SageMakerModel]]
    _fixed: ClassVar[dict[str, str]] = {}  # hyperparameters the class decides (e.g. predictor_type)
    _hp_params: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_algorithm" not in cls.__dict__:
            return
        spec = builtin.get(cls._algorithm).hyperparameters
        cls._hp_params = declared_params(spec, set(cls._fixed))
        for name, (param, _) in cls._hp_params.items():
            setattr(cls, name, param)
            cap = name[0].upper() + name[1:]
            setattr(cls, f"set{cap}", _setter(name))
            setattr(cls, f"get{cap}", _getter(name))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        defaults = {name: hp.default for name, (_, hp) in self._hp_params.items() if hp.default is not None}
        self._setDefault(**defaults)  # shown by explainParams; only explicitly set values are sent
        self.setParams(**kwargs)

    def setParams(self, **kwargs: Any) -> SageMakerEstimator:
        unknown = sorted(k for k in kwargs if not self.hasParam(k))
        if unknown:
            raise ParamError(f"{type(self).__name__} has no Param {unknown[0]!r} "
                             f"(Params: {', '.join(sorted(p.name for p in self.params))})")
        self._set(**{k: v for k, v in kwargs.items() if v is not None})
        return self

    @classmethod
    def spec(cls) -> HyperparameterSpec:
        return builtin.get(cls._algorithm).hyperparameters

    def hyperparameters(self) -> dict[str, str]:
        """The SageMaker hyperparameters this estimator sends (strings), validated; fails naming the Param."""
        spec = self.spec()
        raw: dict[str, Any] = dict(self._fixed)
        for name, (_, hp) in self._hp_params.items():
            param = self.getParam(name)  # this instance's copy (the class attribute has no parent)
            if self.isSet(param):
                raw[hp.name] = self.getOrDefault(param)
        try:
            parsed = spec.parse(raw)
        except HyperparameterError as exc:
            param_name = spec[exc.name].param_name if exc.name in spec else exc.name
            raise ParamError(f"Param {param_name} ({exc.name}): {exc.problem}") from None
        return spec.to_strings({k: v for k, v in parsed.items() if k in raw or v is not None})

    # fit ------------------------------------------------------------------------------------------------
    def fit(self, dataset, params=None):
        """Train on a DataFrame, a Channel, or a dict of them keyed by channel name (``train``, ``validation``…)."""
        if isinstance(dataset, DataFrame):
            return super().fit(dataset, params)
        if params:
            return self.copy(params).fit(dataset)
        return self._fit_channels(dataset if isinstance(dataset, dict) else {"train": dataset})

    def _fit(self, dataset: DataFrame) -> SageMakerModel:
        return self._fit_channels({"train": dataset})

    def _fit_channels(self, data: dict[str, DataFrame | Channel]) -> SageMakerModel:
        hps = self.hyperparameters()  # before any Spark job
        spark = _session_of(data)
        staged: list[str] = []
        try:
            channels = {name: self._as_channel(spark, name, value, staged) for name, value in data.items()}
            if "feature_dim" in self.spec() and hps.get("feature_dim") in (None, AUTO):
                dim = channels["train"].feature_dim
                if dim is not None:
                    hps["feature_dim"] = str(dim)
            result = run_training(spark, TrainingRequest(
                algorithm=self._algorithm, hyperparameters=hps, channels=channels,
                num_workers=self.getOrDefault(self.numWorkers), gpus_per_worker=self.getOrDefault(self.gpusPerWorker),
                model_store=self._model_store(spark), progress=self.getOrDefault(self.showProgress)))
        finally:
            if self.getOrDefault(self.deleteStagingData):
                for path in staged:
                    _remove(path)
        return self._make_model(result)

    def _make_model(self, result: TrainingResult) -> SageMakerModel:
        model = self._model_class(modelLocation=result.model_location)
        model._set(featuresCol=self.getOrDefault(self.featuresCol))
        model._training_job = result.job_name
        model._training_metrics = dict(result.metrics)
        return model

    def _as_channel(self, spark, name: str, value, staged: list[str]) -> Channel:
        if isinstance(value, Channel):
            return value
        if not isinstance(value, DataFrame):
            raise TypeError(f"channel {name}: expected a DataFrame or a Channel, got {type(value).__name__}")
        path = fsutil.join(self._staging_dir(spark), f"{self._algorithm}-{uuid.uuid4().hex[:12]}", name)
        staged.append(path.rsplit("/", 1)[0] if "://" in path else os.path.dirname(path))
        features, label = self.getOrDefault(self.featuresCol), self.getOrDefault(self.labelCol)
        supervised = builtin.get(self._algorithm).supervised
        if supervised and label not in value.columns:
            raise ParamError(f"labelCol {label!r} is not a column (columns: {', '.join(value.columns)})")
        label = label if supervised else None
        channel = to_channel(value, path, featuresCol=features, labelCol=label)
        workers = self.getOrDefault(self.numWorkers)
        if len(channel.shards()) < workers:  # every worker needs a shard: rare, so rewrite rather than always shuffle
            channel = to_channel(value.repartition(workers), path, featuresCol=features, labelCol=label)
        return channel

    def _model_store(self, spark) -> str:
        return self.getOrDefault(self.modelStore) if self.isDefined(self.modelStore) else default_model_store(spark)

    def _staging_dir(self, spark) -> str:
        return self.getOrDefault(self.stagingDir) if self.isDefined(self.stagingDir) else default_staging_dir(spark)

    # persistence -------------------------------------------------------------------------------------------
    def write(self) -> MLWriter:
        return _ParamsWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ParamsReader(cls)


class SageMakerModel(Model, CommonParams, MLWritable, MLReadable):
    """A trained built-in model: its artifact, learned values, final metrics, and executor-side scoring."""

    modelLocation = Param(Params._dummy(), "modelLocation", "the model artifact (folder or URI)",
                          typeConverter=TypeConverters.toString)

    def __init__(self, modelLocation: str | None = None, featuresCol: str | None = None) -> None:
        super().__init__()
        self._model = None
        self._training_job: str | None = None
        self._training_metrics: dict[str, float] | None = None
        if modelLocation is not None:
            self._set(modelLocation=modelLocation)
        if featuresCol is not None:
            self._set(featuresCol=featuresCol)

    @property
    def algorithm_model(self):
        """The Spark-free model (``algorithms.builtin.base.Model``), loaded once."""
        if self._model is None:
            from algorithms.models import load_model

            self._model = load_model(self.getOrDefault(self.modelLocation))
        return self._model

    @property
    def metrics(self) -> dict[str, float]:
        """Final metrics of the training job (SageMaker names)."""
        if self._training_metrics is None:
            self._training_metrics = dict(read_manifest(self.getOrDefault(self.modelLocation)).metrics)
        return dict(self._training_metrics)

    @property
    def trainingJobName(self) -> str | None:
        if self._training_job is None:
            self._training_job = read_manifest(self.getOrDefault(self.modelLocation)).training_job
        return self._training_job

    @property
    def featureDim(self) -> int:
        return self.algorithm_model.feature_dim

    def _scoring_options(self) -> dict[str, Any]:
        """Options for the algorithm model's ``configured(**options)``, from model Params that change the
        outputs (none by default). Scoring applies them on the driver (for the schema) and in the executors."""
        return {}

    def _transform(self, dataset: DataFrame) -> DataFrame:
        options = self._scoring_options()
        model = self.algorithm_model.configured(**options) if options else self.algorithm_model
        return score_dataframe(dataset, self.getOrDefault(self.modelLocation), self.getOrDefault(self.featuresCol),
                               model, options)

    def write(self) -> MLWriter:
        return _ParamsWriter(self, artifact=True)

    @classmethod
    def read(cls) -> MLReader:
        return _ParamsReader(cls, artifact=True)

    def copy(self, extra=None):
        that = super().copy(extra)
        that._model = self._model
        that._training_job = self._training_job
        that._training_metrics = self._training_metrics
        return that


def _setter(name: str):
    def setter(self, value):
        self._set(**{name: value})
        return self

    setter.__name__ = f"set{name[0].upper()}{name[1:]}"
    return setter


def _getter(name: str):
    def getter(self):
        return self.getOrDefault(getattr(self, name))

    getter.__name__ = f"get{name[0].upper()}{name[1:]}"
    return getter


def _session_of(data: dict) -> SparkSession:
    for value in data.values():
        if isinstance(value, DataFrame):
            return value.sparkSession
    active = SparkSession.getActiveSession()
    if active is None:
        raise RuntimeError("no active Spark session: create one before fitting on channels")
    return active


def _remove(path: str) -> None:
    fs, inner = fsutil.resolve(path)
    fsutil.delete_dir_quietly(fs, inner)


class _ParamsWriter(MLWriter):
    """Params metadata as pyspark's DefaultParamsWriter writes it (so Pipelines load us), plus the artifact."""

    def __init__(self, instance, artifact: bool = False):
        super().__init__()
        self.instance = instance
        self.artifact = artifact

    def saveImpl(self, path: str) -> None:
        spark = self.sparkSession
        extra = None
        if self.artifact:
            location = self.instance.getOrDefault(self.instance.modelLocation)
            local, manifest = fetch(location)
            target = fsutil.join(path, "artifact")
            from algorithms.artifact import write_artifact

            write_artifact(local, manifest, target)
            extra = {"artifact": "artifact"}
        DefaultParamsWriter.saveMetadata(self.instance, path, spark, extraMetadata=extra,
                                         paramMap=_json_params(self.instance))


class _ParamsReader(MLReader):
    def __init__(self, cls, artifact: bool = False):
        super().__init__()
        self.cls = cls
        self.artifact = artifact

    def load(self, path: str):
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        cls = DefaultParamsReader._DefaultParamsReader__get_class(metadata["class"])  # type: ignore[attr-defined]
        instance = cls()
        instance._resetUid(metadata["uid"])
        params = dict(metadata.get("paramMap") or {})
        if self.artifact:
            params["modelLocation"] = fsutil.join(path, metadata.get("artifact", "artifact"))
        for name, value in params.items():
            if instance.hasParam(name):
                instance._set(**{name: value})
        return instance


def _json_params(instance) -> dict[str, Any]:
    out = {}
    for param, value in instance._paramMap.items():
        out[param.name] = value
    json.dumps(out)  # fail here, not halfway through writing, if a value is not JSON
    return out

"""One generic Estimator/Model skeleton; each built-in declares only its algorithm (and fixed hyperparameters).

``fit`` validates every Param, turns DataFrames into channels (or takes channels as they are), runs one
barrier stage through the runner and returns a Model holding the artifact. ``transform`` scores inside
the executors over Arrow batches and adds SageMaker's output columns.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import Any, ClassVar

from pyspark.ml import Model
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame

from algorithms import builtin
from algorithms import fs as fsutil
from algorithms.artifact import fetch, read_manifest
from algorithms.channel import Channel
from algorithms.hyperparameters import AUTO, HyperparameterError, HyperparameterSpec

from ..runner import TrainingRequest, TrainingResult, run_training
from .channel_fit import IF_PRESENT, NONE, REQUIRED, ChannelFitEstimator
from .params import CommonParams, DeclaredParam, ParamError, declared_hyperparameter_params, setting_param
from .scoring import score_dataframe


class SageMakerEstimator(ChannelFitEstimator, MLWritable, MLReadable):
    """Base of every built-in estimator. Subclasses set ``_algorithm``, ``_model_class`` and maybe ``_fixed``;
    their Params, accessors, keyword signature and docstring come from the algorithm's hyperparameters."""

    _algorithm: ClassVar[str]
    _model_class: ClassVar[type[SageMakerModel]]
    _fixed: ClassVar[dict[str, str]] = {}  # hyperparameters the class decides (e.g. predictor_type)
    _hp_params: ClassVar[dict[str, DeclaredParam]] = {}

    def __init_subclass__(cls, **kwargs):
        if "_algorithm" in cls.__dict__:
            spec = builtin.get(cls._algorithm).hyperparameters
            cls._hp_params = declared_hyperparameter_params(spec, set(cls._fixed))
            for name, param in cls._hp_params.items():
                setattr(cls, name, param)
        super().__init_subclass__(**kwargs)  # then accessors, signatures and the docstring, from all Params

    @classmethod
    def _docstring_notes(cls) -> list[str]:
        notes = []
        if cls._fixed:
            fixed = ", ".join(f"``{name}={value!r}``" for name, value in cls._fixed.items())
            notes.append(f"This class sets {fixed}.")
        if "_model_class" in vars(cls):
            notes.append(f"``fit`` returns a :class:`{cls._model_class.__name__}`.")
        return notes

    @classmethod
    def spec(cls) -> HyperparameterSpec:
        return builtin.get(cls._algorithm).hyperparameters

    def hyperparameters(self, feature_dim: int | None = None) -> dict[str, str]:
        """The SageMaker hyperparameters this estimator sends (strings), validated; fails naming the Param.

        ``feature_dim`` fills in ``feature_dim`` when the Param is unset (it is known once data is a channel);
        without it a stand-in checks everything else before any Spark job runs.
        """
        spec = self.spec()
        raw: dict[str, Any] = {**self._class_defaults(), **self._fixed}
        for name, declared in self._hp_params.items():
            param = self.getParam(name)  # this instance's copy (the class attribute has no parent)
            if self.isSet(param):
                raw[declared.hyperparameter.name] = self.getOrDefault(param)
        stand_in = False
        declared = raw.get("feature_dim")
        if feature_dim is not None and declared not in (None, AUTO) and int(declared) != int(feature_dim):
            param_name = spec["feature_dim"].param_name
            raise ParamError(f"Param {param_name} (feature_dim) is {declared} but the train data's vectors have "
                             f"{feature_dim} features")
        if "feature_dim" in spec and raw.get("feature_dim") in (None, AUTO):
            stand_in = feature_dim is None
            most = spec["feature_dim"].high  # the stand-in must itself be a valid feature_dim (RCF allows 10000)
            raw["feature_dim"] = (_UNKNOWN_DIM if most is None else int(most)) if stand_in else feature_dim
        try:
            parsed = builtin.get(self._algorithm).validate(raw)  # ranges and cross-hyperparameter rules
        except HyperparameterError as exc:
            param_name = spec[exc.name].param_name if exc.name in spec else exc.name
            raise ParamError(f"Param {param_name} ({exc.name}): {exc.problem}") from None
        out = spec.to_strings({k: v for k, v in parsed.items() if k in raw or v is not None})
        if stand_in:
            out.pop("feature_dim")
        return out

    def _class_defaults(self) -> dict[str, Any]:
        """Hyperparameters this class picks when their Params are unset (e.g. XGBoostClassifier's objective)."""
        return {}

    # fit ------------------------------------------------------------------------------------------------
    def _fit_channels(self, data: dict[str, DataFrame | Channel]) -> SageMakerModel:
        # every check that needs no data happens here, before any Spark job
        self.hyperparameters(_feature_dim_hint(data.get("train"), self.getOrDefault(self.featuresCol)))
        spark = self._session(data)
        # supervised algorithms need labels everywhere; unsupervised ones may evaluate on labels (RCF's test channel)
        supervised = builtin.get(self._algorithm).supervised
        labels = {name: REQUIRED if supervised else (NONE if name == "train" else IF_PRESENT) for name in data}
        channels, staged, seconds = self._stage(spark, data, labels, self._algorithm)
        try:
            hps = self.hyperparameters(channels["train"].feature_dim if "train" in channels else None)
            result = run_training(spark, TrainingRequest(
                algorithm=self._algorithm, hyperparameters=hps, channels=channels,
                num_workers=self.getOrDefault(self.numWorkers), gpus_per_worker=self.getOrDefault(self.gpusPerWorker),
                model_store=self._model_store(spark), progress=self.getOrDefault(self.showProgress),
                phases={"conversion": seconds} if staged else {}))
        finally:
            self._discard_staged(staged)
        return self._make_model(result)

    def _make_model(self, result: TrainingResult) -> SageMakerModel:
        model = self._model_class(modelLocation=result.model_location)
        model._set(featuresCol=self.getOrDefault(self.featuresCol))
        model._training_job = result.job_name
        model._training_metrics = dict(result.metrics)
        return model

    # persistence -------------------------------------------------------------------------------------------
    def write(self) -> MLWriter:
        return _ParamsWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ParamsReader(cls)


class SageMakerModel(Model, CommonParams, MLWritable, MLReadable):
    """A trained built-in model: its artifact, learned values, final metrics, and executor-side scoring."""

    modelLocation = setting_param("modelLocation", str, "The model artifact: a folder or URI holding "
                                  "manifest.json and the files it lists.")
    _positional = ("modelLocation",)

    def __init__(self, modelLocation: str | None = None, **kwargs: Any) -> None:
        super().__init__(modelLocation=modelLocation, **kwargs)
        self._model = None
        self._training_job: str | None = None
        self._training_metrics: dict[str, float] | None = None

    @property
    def algorithm_model(self):
        """The Spark-free model (``algorithms.builtin.base.Model``), loaded once."""
        if self._model is None:
            from algorithms.builtin import load_model

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

    def deploy(self, endpointName: str, instanceCount: int = 1, variantName: str = "AllTraffic",
               initialWeight: float = 1.0, creationPolicy: str = "CREATE_ON_CONSTRUCT", **options: Any):
        """Host this model on an endpoint; returns an ``EndpointModel`` that scores DataFrames through it.

        ``creationPolicy``: ``CREATE_ON_CONSTRUCT`` (now), ``CREATE_ON_TRANSFORM`` (at the first transform) or
        ``DO_NOT_CREATE`` (the endpoint exists). Deploying to an existing endpoint adds (or replaces) the
        variant, so two deploys make an A/B test. ``options`` go to ``spark_ml.hosting.deploy``.
        """
        from ..hosting.deployment import deploy

        return deploy(self.getOrDefault(self.modelLocation), endpointName, instanceCount, variantName, initialWeight,
                      creation_policy=creationPolicy, features_col=self.getOrDefault(self.featuresCol), **options)

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


_UNKNOWN_DIM = 2**31 - 1  # stands in for feature_dim before the data is seen


def _feature_dim_hint(train, features_col: str) -> int | None:
    """feature_dim without running a job: a channel's manifest, or the ML attributes VectorAssembler records."""
    if isinstance(train, Channel):
        return train.feature_dim
    if isinstance(train, DataFrame):
        for field in train.schema.fields:
            attrs = (field.metadata or {}).get("ml_attr", {})
            if field.name == features_col and "num_attrs" in attrs:
                return int(attrs["num_attrs"])
    return None


class _ParamsWriter(MLWriter):
    """Params metadata as pyspark's DefaultParamsWriter writes it (so Pipelines load us), plus the artifact."""

    def __init__(self, instance, artifact: bool = False):
        super().__init__()
        self.instance = instance
        self.artifact = artifact

    def save(self, path: str) -> None:
        if not self.artifact:
            super().save(path)
            return
        location = self.instance.getOrDefault(self.instance.modelLocation)
        with tempfile.TemporaryDirectory(prefix="spark-ml-save-") as held:
            local, manifest = fetch(location, into=held)  # a remote artifact lands in `held`, removed after
            if local != held and self.shouldOverwrite:
                # overwrite deletes `path` before saveImpl runs, and the artifact may live there (a model
                # loaded from `path` and saved back): hold a copy
                shutil.copytree(local, held, dirs_exist_ok=True)
                local = held
            self._staged = (local, manifest)
            super().save(path)

    def saveImpl(self, path: str) -> None:
        spark = self.sparkSession
        extra = None
        if self.artifact:
            local, manifest = self._staged
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

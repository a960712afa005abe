"""Bring your own training code: ``ScriptEstimator`` (SageMaker script mode) and ``AlgorithmEstimator``
(an executable following SageMaker's training container contract)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from abc import abstractmethod
from typing import Any

from pyspark.ml import Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.sql import DataFrame

from algorithms.artifact import read_manifest
from algorithms.channel import Channel

from ..runner import EXECUTABLE, SCRIPT, ScriptPlan, TrainingRequest, run_training
from .channel_fit import IF_PRESENT, ChannelFitEstimator
from .params import ParamError

MAX_SOURCE_BYTES = 64 << 20


def archive_source(source_dir: str) -> bytes:
    """The source folder as a gzipped tar, shipped to every worker with the job."""
    if not os.path.isdir(source_dir):
        raise ParamError(f"Param sourceDir: {source_dir!r} is not a folder")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for parent, dirs, names in os.walk(source_dir):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git"))
            for name in sorted(names):
                full = os.path.join(parent, name)
                tar.add(full, arcname=os.path.relpath(full, source_dir))
    data = buf.getvalue()
    if len(data) > MAX_SOURCE_BYTES:
        raise ParamError(f"Param sourceDir: {source_dir} compresses to {len(data) >> 20} MiB; keep code and small "
                         f"files there (at most {MAX_SOURCE_BYTES >> 20} MiB) and read data through channels")
    return data


def _to_dict(value) -> dict[str, str]:
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict, got {type(value).__name__}")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _to_metric_definitions(value) -> list[dict[str, str]]:
    if isinstance(value, str):
        value = json.loads(value)
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"Name", "Regex"}:
            raise TypeError('metric definitions are [{"Name": ..., "Regex": ...}]')
        out.append({"Name": str(item["Name"]), "Regex": str(item["Regex"])})
    return out


class _UserCodeEstimator(ChannelFitEstimator):
    hyperparameters = Param(Params._dummy(), "hyperparameters", "hyperparameters passed to the code (as SageMaker "
                            "does: SM_HPS, SM_HP_<NAME>, command-line arguments)", typeConverter=_to_dict)
    metricDefinitions = Param(Params._dummy(), "metricDefinitions", 'regexes that pick metrics out of the output: '
                              '[{"Name": "validation:loss", "Regex": "loss=([0-9.]+)"}]',
                              typeConverter=_to_metric_definitions)
    environment = Param(Params._dummy(), "environment", "extra environment variables for the code",
                        typeConverter=_to_dict)
    sourceDir = Param(Params._dummy(), "sourceDir", "folder with the code, shipped to every worker",
                      typeConverter=TypeConverters.toString)
    algorithmName = Param(Params._dummy(), "algorithmName", "name recorded for the job and the model",
                          typeConverter=TypeConverters.toString)

    _kind: str

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._setDefault(hyperparameters={}, metricDefinitions=[], environment={})
        unknown = sorted(k for k in kwargs if not self.hasParam(k))
        if unknown:
            raise ParamError(f"{type(self).__name__} has no Param {unknown[0]!r}")
        self._set(**{k: v for k, v in kwargs.items() if v is not None})

    @abstractmethod
    def _plan(self) -> ScriptPlan:
        """What each worker runs."""

    def _fit_channels(self, data: dict[str, DataFrame | Channel]) -> UserCodeModel:
        plan = self._plan()
        spark = self._session(data)
        channels, staged, seconds = self._stage(spark, data, IF_PRESENT, "user-code")
        try:
            name = self.getOrDefault(self.algorithmName) if self.isDefined(self.algorithmName) else self._kind
            result = run_training(spark, TrainingRequest(
                algorithm=name, hyperparameters=dict(self.getOrDefault(self.hyperparameters)), channels=channels,
                num_workers=self.getOrDefault(self.numWorkers), gpus_per_worker=self.getOrDefault(self.gpusPerWorker),
                kind=self._kind, script=plan, model_store=self._model_store(spark),
                progress=self.getOrDefault(self.showProgress), phases={"conversion": seconds} if staged else {}))
        finally:
            self._discard_staged(staged)
        model = UserCodeModel(result.model_location)
        model._metrics = dict(result.metrics)
        return model

    def _common_plan(self, **kw) -> ScriptPlan:
        source = self.getOrDefault(self.sourceDir) if self.isDefined(self.sourceDir) else None
        return ScriptPlan(source_archive=archive_source(source) if source else None,
                          metric_definitions=list(self.getOrDefault(self.metricDefinitions)),
                          environment=dict(self.getOrDefault(self.environment)), **kw)


class ScriptEstimator(_UserCodeEstimator):
    """Runs a SageMaker script-mode training script unchanged in every worker.

    The script sees ``SM_CHANNEL_<NAME>``, ``SM_MODEL_DIR``, ``SM_HPS``, ``SM_HOSTS``, ``SM_CURRENT_HOST``… and
    ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE`` for torch.distributed. Rank 0's model folder
    becomes the model artifact; the exit status decides success and the stderr tail is the failure reason.
    """

    entryPoint = Param(Params._dummy(), "entryPoint", "the script, relative to sourceDir",
                       typeConverter=TypeConverters.toString)
    _kind = SCRIPT

    def _plan(self) -> ScriptPlan:
        if not self.isDefined(self.entryPoint):
            raise ParamError("Param entryPoint is required (the script's path inside sourceDir)")
        if not self.isDefined(self.sourceDir):
            raise ParamError("Param sourceDir is required (the folder holding entryPoint)")
        entry = self.getOrDefault(self.entryPoint)
        if not os.path.isfile(os.path.join(self.getOrDefault(self.sourceDir), entry)):
            raise ParamError(f"Param entryPoint: {entry!r} is not a file in sourceDir")
        return self._common_plan(entry_point=entry)


class AlgorithmEstimator(_UserCodeEstimator):
    """Runs an executable under SageMaker's training container contract on each worker's local root.

    ``trainCommand`` may use ``{base_dir}`` (the root holding ``input/``, ``model/``, ``output/``),
    ``{model_dir}`` and ``{code_dir}``; ``SAGEMAKER_BASE_DIR`` is set too. ``output/failure`` becomes the
    failure reason.
    """

    trainCommand = Param(Params._dummy(), "trainCommand", "argv of the training executable",
                         typeConverter=TypeConverters.toListString)
    _kind = EXECUTABLE

    def _plan(self) -> ScriptPlan:
        if not self.isDefined(self.trainCommand) or not self.getOrDefault(self.trainCommand):
            raise ParamError("Param trainCommand is required (the executable and its arguments)")
        return self._common_plan(command=list(self.getOrDefault(self.trainCommand)))


class UserCodeModel(Model):
    """The artifact a user's code produced. Its files are the user's own: load them with the user's code."""

    def __init__(self, modelLocation: str) -> None:
        super().__init__()
        self.modelLocation = modelLocation
        self._metrics: dict[str, float] | None = None

    @property
    def metrics(self) -> dict[str, float]:
        if self._metrics is None:
            self._metrics = dict(read_manifest(self.modelLocation).metrics)
        return dict(self._metrics)

    @property
    def files(self) -> list[str]:
        return list(read_manifest(self.modelLocation).files)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        raise TypeError("a model trained by your own code has no built-in scoring: load the files at "
                        f"{self.modelLocation} with your code (for example in a pandas UDF)")

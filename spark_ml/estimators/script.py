"""Bring your own training code: ``ScriptEstimator`` (SageMaker script mode) and ``AlgorithmEstimator``
(an executable following SageMaker's training container contract)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from abc import abstractmethod

from pyspark.ml import Model
from pyspark.ml.param import TypeConverters
from pyspark.sql import DataFrame

from algorithms.artifact import read_manifest
from algorithms.channel import Channel

from ..runner import EXECUTABLE, SCRIPT, ScriptPlan, TrainingRequest, run_training
from .channel_fit import IF_PRESENT, ChannelFitEstimator
from .params import DeclaredParam, ParamError, setting_param

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
    hyperparameters = DeclaredParam(
        "hyperparameters", "Hyperparameters passed to the code as SageMaker does: SM_HPS, SM_HP_<NAME> and "
        "command-line arguments; values that are not strings are sent as JSON.", _to_dict,
        kind=dict[str, object], default={}, accepts="a dict (or a JSON object) of name to value")
    metricDefinitions = DeclaredParam(
        "metricDefinitions", "Regexes that pick metrics out of the code's output, as SageMaker's metric "
        'definitions: [{"Name": "validation:loss", "Regex": "loss=([0-9.]+)"}].', _to_metric_definitions,
        kind=list[dict[str, str]], default=[], accepts='a list of {"Name": ..., "Regex": ...} dicts')
    environment = DeclaredParam("environment", "Extra environment variables for the code.", _to_dict,
                                kind=dict[str, str], default={}, accepts="a dict of name to value")
    sourceDir = setting_param("sourceDir", str, "Folder with the code (and small files it needs), shipped to "
                              f"every worker; at most {MAX_SOURCE_BYTES >> 20} MiB compressed. ScriptEstimator "
                              "requires it.")
    algorithmName = setting_param("algorithmName", str, "Name recorded for the job and the model. Unset: "
                                  "script (ScriptEstimator) or executable (AlgorithmEstimator).")

    _kind: str

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

    Examples
    --------
    >>> import os, tempfile
    >>> import spark_ml
    >>> src = tempfile.mkdtemp()
    >>> with open(os.path.join(src, "train.py"), "w") as script:
    ...     _ = script.write('''
    ... import json, os
    ... hps = json.loads(os.environ["SM_HPS"])
    ... with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as out:
    ...     json.dump(hps, out)
    ... print("loss=0.25")
    ... ''')
    >>> df = spark.createDataFrame([([0.0, 1.0], 0.0), ([1.0, 0.0], 1.0)], ["features", "label"])
    >>> estimator = spark_ml.ScriptEstimator(
    ...     entryPoint="train.py", sourceDir=src, hyperparameters={"epochs": 3},
    ...     metricDefinitions=[{"Name": "train:loss", "Regex": "loss=([0-9.]+)"}])
    >>> model = estimator.fit(df)
    >>> model.files, model.metrics
    (['model.json'], {'train:loss': 0.25})
    """

    entryPoint = setting_param("entryPoint", str, "The script, relative to sourceDir.", required=True)
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

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([0.0, 1.0], 0.0), ([1.0, 0.0], 1.0)], ["features", "label"])
    >>> estimator = spark_ml.AlgorithmEstimator(
    ...     trainCommand=["sh", "-c", "ls {base_dir}/input/data > {model_dir}/channels.txt"],
    ...     algorithmName="list-channels")
    >>> model = estimator.fit(df)
    >>> model.files
    ['channels.txt']
    """

    trainCommand = DeclaredParam("trainCommand", "The training executable and its arguments; {base_dir}, "
                                 "{model_dir} and {code_dir} in them are replaced.",
                                 TypeConverters.toListString, kind=list[str], required=True)
    _kind = EXECUTABLE

    def _plan(self) -> ScriptPlan:
        if not self.isDefined(self.trainCommand) or not self.getOrDefault(self.trainCommand):
            raise ParamError("Param trainCommand is required (the executable and its arguments)")
        return self._common_plan(command=list(self.getOrDefault(self.trainCommand)))


class UserCodeModel(Model):
    """The artifact a user's code produced (what ``ScriptEstimator`` and ``AlgorithmEstimator`` fit). Its files
    are the user's own: load them with the user's code from ``modelLocation`` (a folder or URI); ``files`` lists
    them and ``metrics`` holds the final metrics the metric definitions picked out. It has no Params and no
    built-in scoring: ``transform`` fails, saying so.

    Examples
    --------
    >>> import os
    >>> import spark_ml
    >>> df = spark.createDataFrame([([0.0, 1.0], 0.0), ([1.0, 0.0], 1.0)], ["features", "label"])
    >>> model = spark_ml.AlgorithmEstimator(trainCommand=["sh", "-c", "echo 42 > {model_dir}/answer.txt"]).fit(df)
    >>> with open(os.path.join(model.modelLocation, "answer.txt")) as f:
    ...     f.read().strip()
    '42'
    >>> spark_ml.UserCodeModel(model.modelLocation).files
    ['answer.txt']
    """

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

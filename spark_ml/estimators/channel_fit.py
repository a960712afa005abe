"""What every spark_ml estimator does around training: take channels or DataFrames, stage DataFrames as
channels (timed, cleaned up afterwards), and pick the model store."""

from __future__ import annotations

import threading
import time
import uuid
from abc import abstractmethod

from pyspark.ml import Estimator
from pyspark.sql import DataFrame, SparkSession

from algorithms import fs as fsutil
from algorithms.channel import Channel

from ..channels import to_channel
from .locations import default_model_store, default_staging_dir
from .params import CommonParams, ParamError

REQUIRED, IF_PRESENT, NONE = "required", "if-present", "none"  # label handling when staging a DataFrame
_CLEANUPS: list[threading.Thread] = []
_CLEANUPS_LOCK = threading.Lock()


def wait_for_staging_cleanup(timeout: float | None = None) -> None:
    """Until the staged channels of finished fits are deleted (they are removed in the background)."""
    with _CLEANUPS_LOCK:
        pending = list(_CLEANUPS)
    for thread in pending:
        thread.join(timeout)


def _delete_all(paths: list[str]) -> None:
    for path in paths:
        fs, inner = fsutil.resolve(path)
        fsutil.delete_dir_quietly(fs, inner)


class ChannelFitEstimator(Estimator, CommonParams):
    """``fit(df)``, ``fit(channel)`` or ``fit({"train": df_or_channel, "validation": ..., ...})``."""

    def fit(self, dataset, params=None):
        """Train on a DataFrame, a Channel, or a dict of them keyed by channel name (``train``, ``validation``…)."""
        if isinstance(dataset, DataFrame):
            return super().fit(dataset, params)
        if params:
            return self.copy(params).fit(dataset)
        return self._fit_channels(dataset if isinstance(dataset, dict) else {"train": dataset})

    def _fit(self, dataset: DataFrame):
        return self._fit_channels({"train": dataset})

    @abstractmethod
    def _fit_channels(self, data: dict):
        """Train on named channels (DataFrames are written as channels first)."""

    # helpers for _fit_channels --------------------------------------------------------------------------------
    @staticmethod
    def _session(data: dict) -> SparkSession:
        for value in data.values():
            if isinstance(value, DataFrame):
                return value.sparkSession
        active = SparkSession.getActiveSession()
        if active is None:
            raise RuntimeError("no active Spark session: create one before fitting on channels")
        return active

    def _stage(self, spark, data: dict, labels: str | dict[str, str],
               prefix: str) -> tuple[dict[str, Channel], list[str], float]:
        """Channels for every entry (DataFrames written under ``stagingDir``); the staged folders; seconds spent.
        ``labels`` is the label handling of every channel, or of each channel by name (NONE when unnamed)."""
        started = time.perf_counter()
        channels: dict[str, Channel] = {}
        staged: list[str] = []
        folder = fsutil.join(self._staging_dir(spark), f"{prefix}-{uuid.uuid4().hex[:12]}")
        for name, value in data.items():
            if isinstance(value, Channel):
                channels[name] = value
            elif isinstance(value, DataFrame):
                if not staged:
                    staged.append(folder)
                mode = labels.get(name, NONE) if isinstance(labels, dict) else labels
                channels[name] = self._write_channel(value, fsutil.join(folder, name), mode)
            else:
                raise TypeError(f"channel {name}: expected a DataFrame or a Channel, got {type(value).__name__}")
        return channels, staged, time.perf_counter() - started

    def _write_channel(self, df: DataFrame, path: str, labels: str) -> Channel:
        features, label = self.getOrDefault(self.featuresCol), self.getOrDefault(self.labelCol)
        if labels == REQUIRED and label not in df.columns:
            raise ParamError(f"labelCol {label!r} is not a column (columns: {', '.join(df.columns)})")
        label = label if labels == REQUIRED or (labels == IF_PRESENT and label in df.columns) else None
        channel = to_channel(df, path, featuresCol=features, labelCol=label)
        workers = self.getOrDefault(self.numWorkers)
        if len(channel.shards()) < workers:  # every worker needs a shard: rare, so rewrite rather than always shuffle
            channel = to_channel(df.repartition(workers), path, featuresCol=features, labelCol=label)
        return channel

    def _discard_staged(self, staged: list[str]) -> None:
        """Delete the staged channels in the background: the model does not need them, and removing a large
        channel takes tens of milliseconds locally (more on object stores). Interpreter exit waits for it."""
        if self.getOrDefault(self.deleteStagingData) and staged:
            thread = threading.Thread(target=_delete_all, args=(list(staged),), name="spark-ml-staging-cleanup")
            with _CLEANUPS_LOCK:
                _CLEANUPS[:] = [t for t in _CLEANUPS if t.is_alive()] + [thread]
            thread.start()

    def _model_store(self, spark) -> str:
        return self.getOrDefault(self.modelStore) if self.isDefined(self.modelStore) else default_model_store(spark)

    def _staging_dir(self, spark) -> str:
        return self.getOrDefault(self.stagingDir) if self.isDefined(self.stagingDir) else default_staging_dir(spark)

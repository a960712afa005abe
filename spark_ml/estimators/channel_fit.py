"""``fit`` that takes channels as well as DataFrames, shared by every spark_ml estimator."""

from __future__ import annotations

from abc import abstractmethod

from pyspark.ml import Estimator
from pyspark.sql import DataFrame


class ChannelFitEstimator(Estimator):
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

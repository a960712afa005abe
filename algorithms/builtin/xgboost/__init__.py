"""XGBoost (SageMaker's ``xgboost`` container): :mod:`.algorithm` (training through ``xgboost.train`` across
workers), :mod:`.model`, :mod:`.params` (SageMaker's hyperparameters → XGBoost params), :mod:`.data` (channels
streamed into a ``QuantileDMatrix``), :mod:`.metrics`."""

from .algorithm import GPUUnavailable, XGBoost
from .model import XGBoostModel

__all__ = ["GPUUnavailable", "XGBoost", "XGBoostModel"]

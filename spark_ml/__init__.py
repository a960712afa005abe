"""spark_ml: SageMaker's built-in algorithms and hosting on your own Spark cluster."""

from algorithms import __version__
from algorithms.channel import FULLY_REPLICATED, SHARDED_BY_KEY, Channel

from .channels import register, to_channel

__all__ = ["FULLY_REPLICATED", "SHARDED_BY_KEY", "Channel", "__version__", "register", "to_channel"]

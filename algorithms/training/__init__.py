"""The training contract a worker runs under (SageMaker's, on local paths), and its collectives."""

from .collectives import Collectives, LocalCollectives, ThreadGroup
from .env import ChannelInput, TrainingEnv
from .reporter import LogReporter, Reporter

__all__ = ["ChannelInput", "Collectives", "LocalCollectives", "LogReporter", "Reporter", "ThreadGroup",
           "TrainingEnv"]

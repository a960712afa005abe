"""The training runner: one barrier stage across executors running the training contract."""

from .dispatch import TrainingJobFailed, TrainingJobStopped, TrainingRequest, TrainingResult, run_training
from .spec import BUILTIN, EXECUTABLE, SCRIPT, ScriptPlan

__all__ = ["BUILTIN", "EXECUTABLE", "SCRIPT", "ScriptPlan", "TrainingJobFailed", "TrainingJobStopped",
           "TrainingRequest", "TrainingResult", "run_training"]

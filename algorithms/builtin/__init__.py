"""The built-in algorithms: the contract they implement, their registry, and running and saving them.

- :mod:`.base`: :class:`Algorithm` (``train() -> Model``), :class:`MergeablePass` (streaming algorithms),
  :class:`Model` and :class:`Output`.
- :mod:`.registry`: the algorithms by SageMaker name (:func:`register`, :func:`get`, :func:`names`).
- :mod:`.run`: :func:`run_builtin`, what a training worker calls; :mod:`.persistence`: :func:`save_model` /
  :func:`load_model` for model artifacts.
- one module or subpackage per algorithm (``kmeans/``, ``pca.py``, ``linear_learner/``,
  ``factorization_machines/``, ``xgboost/``).
"""

from .base import Algorithm, MergeablePass, Model, Output
from .persistence import load_model, save_model
from .registry import get, names, register
from .run import WorkerResult, run_builtin

__all__ = ["Algorithm", "MergeablePass", "Model", "Output", "WorkerResult", "get", "load_model", "names",
           "register", "run_builtin", "save_model"]

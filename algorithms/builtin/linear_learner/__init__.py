"""Linear Learner (SageMaker ``linear-learner``): many linear models trained at once by SGD, the best kept.

:mod:`.algorithm` (the training driver), :mod:`.model`, :mod:`.params` (hyperparameters and their
cross-checks), :mod:`.scaler`, :mod:`.grid` (the models' settings), :mod:`.sgd` (the ensemble's updates),
:mod:`.losses`, :mod:`.kernels` (fused kernels on the array backend), :mod:`.metrics`.
"""

from .algorithm import LinearLearner
from .model import LinearLearnerModel

__all__ = ["LinearLearner", "LinearLearnerModel"]

"""Random Cut Forest (SageMaker ``randomcutforest``): :mod:`.algorithm` (the streamed sample and training),
:mod:`.forest` (random cut trees as flat arrays: building and vectorized scoring), :mod:`.model`,
:mod:`.metrics` (the test channel's thresholded metrics)."""

from .algorithm import HYPERPARAMETERS, RandomCutForest
from .forest import Forest, build_forest
from .model import RandomCutForestModel

__all__ = ["HYPERPARAMETERS", "Forest", "RandomCutForest", "RandomCutForestModel", "build_forest"]

"""k-NN (SageMaker ``knn``): :mod:`.algorithm` (the streamed sample and the index build), :mod:`.params`
(hyperparameters and SageMaker's cross-checks), :mod:`.reduction` (sign / fjlt projections), :mod:`.index` (faiss),
:mod:`.model`."""

from .algorithm import KNN
from .model import KNNModel, majority_vote
from .params import HYPERPARAMETERS

__all__ = ["HYPERPARAMETERS", "KNN", "KNNModel", "majority_vote"]

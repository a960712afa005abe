"""K-Means (SageMaker ``kmeans``): :mod:`.algorithm` (training), :mod:`.model`, :mod:`.lloyd` (the final
weighted reduction)."""

from .algorithm import HYPERPARAMETERS, KMeans, num_centers
from .model import KMeansModel, closest_centers

__all__ = ["HYPERPARAMETERS", "KMeans", "KMeansModel", "closest_centers", "num_centers"]

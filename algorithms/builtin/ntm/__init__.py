"""SageMaker's NTM: a variational encoder-decoder topic model (:mod:`.network`) trained with the shared neural
trainer. Importing this package does not import torch; training and scoring need it."""

from .algorithm import NTM
from .model import NTMModel

__all__ = ["NTM", "NTMModel"]

"""SageMaker's LDA: spectral topic recovery (:mod:`.spectral`, :mod:`.tensor`) from streamed moments, and
variational inference of each document's topic mixture (:mod:`.inference`)."""

from .algorithm import LDA
from .model import LDAModel

__all__ = ["LDA", "LDAModel"]

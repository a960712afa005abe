"""SageMaker's Seq2Seq (Sockeye-style encoder–decoder: RNN with attention, CNN, and Transformer)."""

from .algorithm import Seq2Seq
from .model import Seq2SeqModel

__all__ = ["Seq2Seq", "Seq2SeqModel"]

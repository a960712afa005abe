"""Seq2Seq networks in plain PyTorch (SageMaker's Seq2Seq is Sockeye on MXNet): RNN encoder–decoder with
attention, convolutional (Gehring et al.) and Transformer encoders and decoders in any combination, and
batched beam search. Importing this package imports torch."""

from .config import NetworkConfig
from .network import Seq2SeqNetwork
from .search import Translations, beam_search

__all__ = ["NetworkConfig", "Seq2SeqNetwork", "Translations", "beam_search"]

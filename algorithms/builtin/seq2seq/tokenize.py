"""Text ↔ tokens: whitespace (SageMaker's Seq2Seq: requests carry whitespace-separated tokens), or a user's
SentencePiece model (``pip install 'spark-ml[sentencepiece]'``), which then travels in the vocab channel
and the model artifact as ``sentencepiece.model`` so training, ``transform`` and endpoints split text alike."""

from __future__ import annotations

SENTENCEPIECE_FILE = "sentencepiece.model"


class Tokenizer:
    """Whitespace tokens, or SentencePiece pieces when given a serialized SentencePiece model."""

    def __init__(self, sentencepiece_model: bytes | None = None):
        self.model_bytes = sentencepiece_model
        self._sp = None
        if sentencepiece_model is not None:
            try:
                import sentencepiece
            except ImportError:
                raise ImportError("this model tokenizes with SentencePiece: pip install 'spark-ml[sentencepiece]'"
                                  ) from None
            self._sp = sentencepiece.SentencePieceProcessor(model_proto=sentencepiece_model)

    @property
    def kind(self) -> str:
        return "whitespace" if self._sp is None else "sentencepiece"

    def split(self, text: str) -> list[str]:
        return text.split() if self._sp is None else list(self._sp.encode(text, out_type=str))

    def join(self, tokens: list[str]) -> str:
        return " ".join(tokens) if self._sp is None else self._sp.decode(tokens)

"""Vocabularies as SageMaker's Seq2Seq reads them: ``vocab.src.json`` / ``vocab.trg.json``, a JSON map token → id.

The special symbols come first, as SageMaker's example preprocessing writes them: ``<pad>`` = 0, ``<unk>`` = 1,
``<s>`` = 2, ``</s>`` = 3. Only ``<pad>`` = 0 is required of a vocabulary file; the others are looked up by
name, so a file with them elsewhere still works. Built vocabularies order words by count, most frequent
first, ties broken in reverse lexical order: exactly the example script's order, so a vocabulary built
from a DataFrame equals the one SageMaker users built from the same text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID = 0
SOURCE_FILE, TARGET_FILE = "vocab.src.json", "vocab.trg.json"


class Vocabulary:
    """Tokens ↔ ids. ``tokens[i]`` is the token of id ``i``."""

    def __init__(self, token_ids: Mapping[str, int], source: str = "vocabulary"):
        ids = {str(t): int(i) for t, i in token_ids.items()}
        if ids.get(PAD) != PAD_ID:
            raise ValueError(f"{source}: {PAD} must have id {PAD_ID} (got {ids.get(PAD)})")
        missing = [s for s in (UNK, BOS, EOS) if s not in ids]
        if missing:
            raise ValueError(f"{source}: the special symbol(s) {', '.join(missing)} are missing")
        size = len(ids)
        values = np.fromiter(ids.values(), np.int64, size)
        if values.min() < 0 or values.max() >= size or len(np.unique(values)) != size:
            raise ValueError(f"{source}: ids must be 0..{size - 1}, each used once")
        self.tokens: list[str] = [""] * size
        for token, i in ids.items():
            self.tokens[i] = token
        self.ids = ids
        self.pad, self.unk, self.bos, self.eos = PAD_ID, ids[UNK], ids[BOS], ids[EOS]

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    @classmethod
    def build(cls, counts: Mapping[str, int], max_words: int | None = None, min_count: int = 1) -> Vocabulary:
        """The special symbols, then the words seen at least ``min_count`` times, most frequent first
        (ties: reverse lexical order), at most ``max_words`` of them."""
        kept = sorted(((c, w) for w, c in counts.items() if c >= min_count and w not in SPECIALS), reverse=True)
        if max_words is not None:
            kept = kept[:max_words]
        return cls({token: i for i, token in enumerate([*SPECIALS, *(w for _, w in kept)])})

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "vocabulary") -> Vocabulary:
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{source} is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                for v in doc.values()):
            raise ValueError(f"{source} must be a JSON object mapping each token to an integer id")
        return cls(doc, source)

    def to_json(self) -> str:
        return json.dumps({token: i for i, token in enumerate(self.tokens)}, ensure_ascii=False, indent=0)

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> Vocabulary:
        return cls({token: i for i, token in enumerate(tokens)})

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Token ids, ``<unk>`` for tokens not in the vocabulary."""
        get, unk = self.ids.get, self.unk
        return np.fromiter((get(t, unk) for t in tokens), np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ids, stopping at ``</s>`` and skipping ``<pad>`` / ``<s>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i in (self.pad, self.bos):
                continue
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return out


__all__ = ["BOS", "EOS", "PAD", "PAD_ID", "SOURCE_FILE", "SPECIALS", "TARGET_FILE", "UNK", "Vocabulary"]

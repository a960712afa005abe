"""Sentence pairs in memory, and the padded, length-bucketed batches the network trains on.

A worker holds its shards' token ids (a few bytes per token: 200k sentence pairs take ~20 MB), as Sockeye
and SageMaker's Seq2Seq do. Sequences are truncated to ``max_seq_len_*``; the source gets ``</s>`` at its
end, the decoder's input starts with ``<s>`` and its expected output ends with ``</s>``. Batches come from
length buckets (Sockeye's: ``bucket_width`` tokens wide on the side that is longer on average, the other
side scaled by the average length ratio), so a batch pads little; each epoch shuffles within buckets and
then the order of the batches, from a seed and the epoch number only, so a resumed epoch replays it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ... import fs as fsutil
from . import records
from .vocab import Vocabulary


@dataclass
class Corpus:
    """Sentence pairs as token ids (no special symbols)."""

    sources: list[np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.sources)

    def take(self, rows: Sequence[int]) -> Corpus:
        return Corpus([self.sources[i] for i in rows], [self.targets[i] for i in rows])

    @classmethod
    def read(cls, files: Sequence[str], channel: str, source_vocab: Vocabulary,
             target_vocab: Vocabulary) -> Corpus:
        """Every record of ``files`` (recordIO-protobuf, as SageMaker's example preprocessing writes them);
        ids outside a vocabulary fail naming the file and record."""
        sources: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        for path in files:
            fs, inner = fsutil.resolve(path)
            name = f"{channel} channel file {path}"
            pairs = records.decode(fsutil.read_bytes(fs, inner), source=name)
            for key, vocab, out in (("source", source_vocab, sources), ("target", target_vocab, targets)):
                for i, ids in enumerate(pairs[key]):
                    if len(ids) and (ids.min() < 0 or ids.max() >= len(vocab)):
                        bad = int(ids[(ids < 0) | (ids >= len(vocab))][0])
                        raise ValueError(f"{name}: record {i} has {key} token id {bad}, outside "
                                         f"vocab.{'src' if key == 'source' else 'trg'}.json (0..{len(vocab) - 1})")
                out.extend(pairs[key])
        return cls(sources, targets)


@dataclass
class Batch:
    src: np.ndarray  # (B, S) int64, padded with 0
    src_len: np.ndarray  # (B,)
    tgt_in: np.ndarray  # (B, T): <s> then the target
    tgt_out: np.ndarray  # (B, T): the target then </s>, padded with 0

    @property
    def size(self) -> int:
        return len(self.src_len)


def pad(sequences: Sequence[np.ndarray], width: int | None = None) -> np.ndarray:
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    out = np.zeros((len(sequences), max(1, int(lengths.max()) if width is None else width)), np.int64)
    mask = np.arange(out.shape[1])[None, :] < lengths[:, None]
    if len(sequences):
        out[mask] = np.concatenate([np.asarray(s, np.int64) for s in sequences])
    return out


def source_ids(tokens: np.ndarray, max_len: int, eos: int) -> np.ndarray:
    return np.append(np.asarray(tokens[:max_len], np.int64), eos)


def make_batch(sources: Sequence[np.ndarray], targets: Sequence[np.ndarray], max_src: int, max_tgt: int,
               bos: int, eos: int, source_eos: int | None = None) -> Batch:
    """Padded tensors of pairs; ``bos`` / ``eos`` are the target vocabulary's, ``source_eos`` the source's."""
    src = [source_ids(s, max_src, eos if source_eos is None else source_eos) for s in sources]
    tgt = [np.asarray(t[:max_tgt], np.int64) for t in targets]
    return Batch(pad(src), np.fromiter((len(s) for s in src), np.int64, len(src)),
                 pad([np.concatenate([[bos], t]) for t in tgt]), pad([np.append(t, eos) for t in tgt]))


def bucket_keys(src_len: np.ndarray, tgt_len: np.ndarray, width: int) -> np.ndarray:
    """A bucket number per pair: ``width`` tokens per bucket on the longer side (on average), the other side's
    width scaled by the length ratio."""
    ratio = float(tgt_len.mean() / max(src_len.mean(), 1e-9)) if len(src_len) else 1.0
    w_src, w_tgt = (max(1, round(width / ratio)), width) if ratio >= 1 else (width, max(1, round(width * ratio)))
    a = (src_len + w_src - 1) // w_src
    b = (tgt_len + w_tgt - 1) // w_tgt
    return a * (int(b.max()) + 1 if len(b) else 1) + b


def epoch_batches(corpus: Corpus, batch_size: int, bucketing: bool, bucket_width: int, max_src: int,
                  max_tgt: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Row indices of each batch of ``epoch``, in training order."""
    rng = np.random.default_rng([seed, epoch])
    n = len(corpus)
    if not bucketing:
        order = rng.permutation(n)
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    src_len = np.fromiter((min(len(s), max_src) + 1 for s in corpus.sources), np.int64, n)
    tgt_len = np.fromiter((min(len(t), max_tgt) + 1 for t in corpus.targets), np.int64, n)
    keys = bucket_keys(src_len, tgt_len, bucket_width)
    batches = []
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        rows = rows[rng.permutation(len(rows))]
        batches.extend(rows[i:i + batch_size] for i in range(0, len(rows), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def iter_batches(corpus: Corpus, rows_per_batch: int, max_src: int, max_tgt: int, bos: int,
                 eos: int, source_eos: int | None = None) -> Iterator[Batch]:
    """In order, for evaluation: batches of pairs of similar length (sorted), covering every pair once."""
    order = np.argsort([len(s) for s in corpus.sources], kind="stable")
    for i in range(0, len(order), rows_per_batch):
        rows = order[i:i + rows_per_batch]
        yield make_batch([corpus.sources[r] for r in rows], [corpus.targets[r] for r in rows], max_src, max_tgt,
                         bos, eos, source_eos)

"""The trained Seq2Seq model: network weights, both vocabularies and the network's shape, and translation.

Artifact files: ``model.pt`` (the network's ``state_dict``, loaded with ``torch.load(weights_only=True)``),
``network.json`` (:class:`NetworkConfig`), ``vocab.src.json`` / ``vocab.trg.json`` (SageMaker's format) and,
for a SentencePiece-tokenized model, ``sentencepiece.model``. Translation is batched beam search on the GPU
when torch sees one, else the CPU; sources are sorted by length into batches, so a batch pads little.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...artifact import ArtifactManifest
from ...batch import Batch
from ..base import Model, Output
from .data import pad, source_ids
from .tokenize import SENTENCEPIECE_FILE, Tokenizer
from .vocab import SOURCE_FILE, TARGET_FILE, Vocabulary

WEIGHTS_FILE, NETWORK_FILE = "model.pt", "network.json"
TRANSLATE_BATCH = 64  # sentences per beam-search batch


@dataclass
class Translation:
    tokens: list[int]  # target ids, without </s>
    attention: np.ndarray | None  # (target tokens, source tokens), when asked


class Seq2SeqModel(Model):
    algorithm = "seq2seq"
    outputs = (Output("target", "vector", "int32"),)

    def __init__(self, hyperparameters: dict[str, str], config, weights: dict, source_vocab: Vocabulary,
                 target_vocab: Vocabulary, tokenizer: Tokenizer | None = None, network=None):
        super().__init__(hyperparameters, config.max_seq_len_source)
        self.config = config
        self.weights = weights  # state_dict on the CPU
        self.source_vocab, self.target_vocab = source_vocab, target_vocab
        self.tokenizer = tokenizer or Tokenizer()
        self._network = network
        self._device = None

    # --------------------------------------------------------------------------------------------- network
    @property
    def beam_size(self) -> int:
        return int(self.hyperparameters.get("beam_size", 5))

    def network(self):
        """The network in eval mode on this process's device (built once)."""
        if self._network is None:
            import torch

            from ...networks.seq2seq import Seq2SeqNetwork

            self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            network = Seq2SeqNetwork(self.config)
            network.load_state_dict(self.weights)
            self._network = network.to(self._device).eval()
        if self._device is None:
            self._device = next(self._network.parameters()).device
        return self._network

    def translate_ids(self, sources: Sequence[np.ndarray], beam_size: int | None = None, attention: bool = False,
                      batch_size: int = TRANSLATE_BATCH) -> list[Translation]:
        """Translations of token-id sequences (truncated to ``max_seq_len_source``)."""
        import torch

        from ...networks.seq2seq import beam_search

        network = self.network()
        beam = self.beam_size if beam_size is None else int(beam_size)
        limit = self.config.max_seq_len_source
        lengths = np.fromiter((min(len(s), limit) for s in sources), np.int64, len(sources))
        order = np.argsort(lengths, kind="stable")
        out: list[Translation | None] = [None] * len(sources)
        eos, bos = self.source_vocab.eos, self.target_vocab.bos
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids = [source_ids(np.asarray(sources[r]), limit, eos) for r in rows]
            src = torch.from_numpy(pad(ids)).to(self._device)
            src_len = torch.tensor([len(i) for i in ids], device=self._device)
            result = beam_search(network, src, src_len, beam, self.config.max_seq_len_target, bos,
                                 self.target_vocab.eos, attention=attention)
            for j, r in enumerate(rows):
                matrix = None
                if attention:
                    n_src = len(ids[j]) - 1  # the source's tokens, without the </s> the network saw last
                    matrix = np.ascontiguousarray(result.attention[j][:, :n_src].float().cpu().numpy())
                out[r] = Translation(result.tokens[j], matrix)
        return out  # type: ignore[return-value]

    def translate(self, texts: Sequence[str], beam_size: int | None = None,
                  attention: bool = False) -> list[tuple[str, np.ndarray | None]]:
        """Translations of texts: tokenized (whitespace or the model's SentencePiece), unknown tokens as <unk>."""
        sources = [self.source_vocab.encode(self.tokenizer.split(t)) for t in texts]
        return [(self.target_text(t.tokens), t.attention) for t in self.translate_ids(sources, beam_size, attention)]

    def target_text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.join(self.target_vocab.decode(ids))

    # --------------------------------------------------------------------------------------------- Model
    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        """Rows of source token ids (padded with 0 = <pad>) → ``target``: rows of target ids, padded with 0."""
        x = batch.dense(np.int64)
        sources = [row[: int(np.flatnonzero(row)[-1]) + 1] if row.any() else row[:0] for row in x]
        translations = self.translate_ids(sources)
        return {"target": pad([np.asarray(t.tokens, np.int64) for t in translations]).astype(np.int32)
                if translations else np.zeros((0, 1), np.int32)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"weight.{k}": v.detach().cpu().numpy() for k, v in self.weights.items()}
        arrays["vocab.src"] = np.array(self.source_vocab.tokens)
        arrays["vocab.trg"] = np.array(self.target_vocab.tokens)
        return arrays

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim) -> Seq2SeqModel:
        import torch

        from ...networks.seq2seq import NetworkConfig
        from .params import SPEC

        source = Vocabulary.from_tokens([str(t) for t in arrays["vocab.src"]])
        target = Vocabulary.from_tokens([str(t) for t in arrays["vocab.trg"]])
        config = NetworkConfig.from_hyperparameters(SPEC.parse(hyperparameters), len(source), len(target))
        weights = {k[len("weight."):]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()
                   if k.startswith("weight.")}
        return cls(hyperparameters, config, weights, source, target)

    def save(self, directory: str) -> None:
        import torch

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in self.weights.items()}, buf)
        files = {WEIGHTS_FILE: buf.getvalue(), NETWORK_FILE: self.config.to_json().encode(),
                 SOURCE_FILE: self.source_vocab.to_json().encode(), TARGET_FILE: self.target_vocab.to_json().encode()}
        if self.tokenizer.model_bytes is not None:
            files[SENTENCEPIECE_FILE] = self.tokenizer.model_bytes
        for name, data in files.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)

    @classmethod
    def load(cls, directory: str, manifest: ArtifactManifest) -> Seq2SeqModel:
        import torch

        from ...networks.seq2seq import NetworkConfig

        def read(name: str) -> bytes:
            with open(os.path.join(directory, name), "rb") as f:
                return f.read()

        config = NetworkConfig.from_json(read(NETWORK_FILE))
        weights = torch.load(io.BytesIO(read(WEIGHTS_FILE)), map_location="cpu", weights_only=True)
        source = Vocabulary.from_json(read(SOURCE_FILE), SOURCE_FILE)
        target = Vocabulary.from_json(read(TARGET_FILE), TARGET_FILE)
        sp = os.path.join(directory, SENTENCEPIECE_FILE)
        tokenizer = Tokenizer(read(SENTENCEPIECE_FILE)) if os.path.exists(sp) else Tokenizer()
        return cls(manifest.hyperparameters, config, weights, source, target, tokenizer)

    def serving_codec(self):
        """Seq2Seq's own request and response formats (see :mod:`.serving`)."""
        from .serving import Seq2SeqCodec

        return Seq2SeqCodec(self)

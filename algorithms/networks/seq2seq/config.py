"""The shape of a Seq2Seq network: everything needed to rebuild it, saved beside its weights as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class NetworkConfig:
    source_vocab: int
    target_vocab: int
    encoder_type: str = "rnn"
    decoder_type: str = "rnn"
    num_layers_encoder: int = 1
    num_layers_decoder: int = 1
    num_embed_source: int = 512
    num_embed_target: int = 512
    max_seq_len_source: int = 100
    max_seq_len_target: int = 100
    rnn_num_hidden: int = 1024
    rnn_cell_type: str = "lstm"
    rnn_attention_type: str = "mlp"
    rnn_attention_num_hidden: int | None = None
    rnn_attention_in_upper_layers: bool = True
    rnn_decoder_state_init: str = "last"
    rnn_residual_connections: bool = False
    rnn_first_residual_layer: int = 2
    rnn_decoder_hidden_dropout: float = 0.0
    cnn_num_hidden: int = 512
    cnn_kernel_width_encoder: int = 3
    cnn_kernel_width_decoder: int = 5
    cnn_activation_type: str = "glu"
    cnn_hidden_dropout: float = 0.0
    transformer_model_size: int = 512
    transformer_attention_heads: int = 8
    transformer_feed_forward_num_hidden: int = 2048
    transformer_dropout: float = 0.0
    embed_dropout_source: float = 0.0
    embed_dropout_target: float = 0.0
    weight_init_type: str = "xavier"
    weight_init_scale: float = 2.34
    xavier_factor_type: str = "in"

    @classmethod
    def from_hyperparameters(cls, hp: dict[str, Any], source_vocab: int, target_vocab: int) -> NetworkConfig:
        names = {f.name for f in fields(cls)} - {"source_vocab", "target_vocab"}
        return cls(source_vocab=source_vocab, target_vocab=target_vocab,
                   **{k: v for k, v in hp.items() if k in names and v is not None})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> NetworkConfig:
        doc = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"network.json has fields this library does not know: {', '.join(unknown)}")
        return cls(**doc)

    @property
    def encoder_size(self) -> int:
        return {"rnn": self.rnn_num_hidden, "cnn": self.cnn_num_hidden,
                "transformer": self.transformer_model_size}[self.encoder_type]

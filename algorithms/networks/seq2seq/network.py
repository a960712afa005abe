"""A Seq2Seq network: an encoder and a decoder of any of the three kinds, built from a :class:`NetworkConfig`."""

from __future__ import annotations

import torch
from torch import nn

from .config import NetworkConfig
from .decoders import DECODERS, State
from .encoders import ENCODERS, Encoded
from .layers import initialize


class Seq2SeqNetwork(nn.Module):
    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        self.encoder = ENCODERS[config.encoder_type](config)
        self.decoder = DECODERS[config.decoder_type](config)
        initialize(self, config.weight_init_type, config.weight_init_scale, config.xavier_factor_type)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        return self.encoder(src, lengths)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits ``(B, T, V)`` of each next target token given the ones before it."""
        logits, _ = self.decoder(tgt_in, self.encode(src, lengths))
        return logits

    def start(self, encoded: Encoded) -> State:
        return self.decoder.start(encoded)

    def step(self, prev: torch.Tensor, state: State, t: int):
        """One decoding step: logits ``(B, V)`` and attention ``(B, S)`` of position ``t``, and the new state."""
        return self.decoder.step(prev, state, t)

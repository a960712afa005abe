"""Seq2Seq encoders: RNN (bidirectional first layer, Bahdanau et al.), CNN (gated convolutions, Gehring et
al.) and Transformer (Vaswani et al.). Each maps padded token ids to ``Encoded``: one vector per source
position and the mask of the valid ones."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .config import NetworkConfig
from .layers import Projection, lengths_mask, sinusoids
from .transformer import TransformerLayer


@dataclass
class Encoded:
    memory: torch.Tensor  # (B, S, H)
    mask: torch.Tensor  # (B, S) true at valid positions
    lengths: torch.Tensor  # (B,)


def _cell(kind: str):
    return nn.LSTM if kind == "lstm" else nn.GRU


class RNNEncoder(nn.Module):
    def __init__(self, c: NetworkConfig):
        super().__init__()
        self.embed = nn.Embedding(c.source_vocab, c.num_embed_source, padding_idx=0)
        self.dropout = nn.Dropout(c.embed_dropout_source)
        rnn, hidden = _cell(c.rnn_cell_type), c.rnn_num_hidden
        self.layers = nn.ModuleList([rnn(c.num_embed_source, hidden // 2, batch_first=True, bidirectional=True)])
        for _ in range(1, c.num_layers_encoder):
            self.layers.append(rnn(hidden, hidden, batch_first=True))
        self.residual_from = c.rnn_first_residual_layer if c.rnn_residual_connections else None

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        x = self.dropout(self.embed(src))
        cpu_lengths = lengths.clamp(min=1).cpu()
        for number, layer in enumerate(self.layers, 1):
            packed = pack_padded_sequence(x, cpu_lengths, batch_first=True, enforce_sorted=False)
            out, _ = layer(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
            x = out + x if self.residual_from is not None and number >= self.residual_from else out
        return Encoded(x, lengths_mask(lengths, src.shape[1]), lengths)


def activation(kind: str):
    return {"relu": nn.ReLU(), "softrelu": nn.Softplus(), "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh()}[kind]


class ConvBlock(nn.Module):
    """A convolution over positions and its activation; GLU halves doubled channels."""

    def __init__(self, hidden: int, width: int, kind: str, dropout: float, causal: bool):
        super().__init__()
        self.glu = kind == "glu"
        self.width, self.causal = width, causal
        self.conv = nn.Conv1d(hidden, 2 * hidden if self.glu else hidden, width)
        self.act = None if self.glu else activation(kind)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, H) → (B, T, H); causal blocks see positions up to t only."""
        x = self.dropout(x).transpose(1, 2)
        if self.causal:
            x = nn.functional.pad(x, (self.width - 1, 0))
        else:
            x = nn.functional.pad(x, ((self.width - 1) // 2, self.width // 2))
        return self._activate(self.conv(x)).transpose(1, 2)

    def window(self, x: torch.Tensor) -> torch.Tensor:
        """The output at the last position of a ``width``-long window ``x`` (B, width, H) → (B, H)."""
        return self._activate(self.conv(x.transpose(1, 2)))[:, :, -1]

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.glu(y, dim=1) if self.glu else self.act(y)


SQRT_HALF = math.sqrt(0.5)


class CNNEncoder(nn.Module):
    def __init__(self, c: NetworkConfig):
        super().__init__()
        self.embed = nn.Embedding(c.source_vocab, c.num_embed_source, padding_idx=0)
        self.positions = nn.Embedding(c.max_seq_len_source + 2, c.num_embed_source)
        self.dropout = nn.Dropout(c.embed_dropout_source)
        self.project = nn.Linear(c.num_embed_source, c.cnn_num_hidden)
        self.blocks = nn.ModuleList([ConvBlock(c.cnn_num_hidden, c.cnn_kernel_width_encoder, c.cnn_activation_type,
                                               c.cnn_hidden_dropout, causal=False)
                                     for _ in range(c.num_layers_encoder)])

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        mask = lengths_mask(lengths, src.shape[1])
        positions = torch.arange(src.shape[1], device=src.device)
        x = self.project(self.dropout(self.embed(src) + self.positions(positions)[None]))
        keep = mask[:, :, None].to(x.dtype)
        for block in self.blocks:
            x = x * keep  # padding must not leak into the valid positions' windows
            x = (block(x) + x) * SQRT_HALF
        return Encoded(x * keep, mask, lengths)


class TransformerEncoder(nn.Module):
    def __init__(self, c: NetworkConfig):
        super().__init__()
        size = c.transformer_model_size
        self.embed = nn.Embedding(c.source_vocab, c.num_embed_source, padding_idx=0)
        self.project = Projection(c.num_embed_source, size)
        self.scale = math.sqrt(size)
        self.register_buffer("positions", sinusoids(c.max_seq_len_source + 2, size), persistent=False)
        self.dropout = nn.Dropout(max(c.embed_dropout_source, c.transformer_dropout))
        self.layers = nn.ModuleList([TransformerLayer(size, c.transformer_attention_heads,
                                                      c.transformer_feed_forward_num_hidden, c.transformer_dropout,
                                                      cross=False) for _ in range(c.num_layers_encoder)])
        self.norm = nn.LayerNorm(size)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        mask = lengths_mask(lengths, src.shape[1])
        x = self.project(self.embed(src)) * self.scale + self.positions[: src.shape[1]][None]
        x = self.dropout(x)
        key_mask = mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, key_mask)
        return Encoded(self.norm(x), mask, lengths)


ENCODERS = {"rnn": RNNEncoder, "cnn": CNNEncoder, "transformer": TransformerEncoder}

"""Pieces the Seq2Seq encoders and decoders share: initialization, embeddings, positions, attention helpers."""

from __future__ import annotations

import math

import torch
from torch import nn


def initialize(module: nn.Module, kind: str, scale: float, factor: str) -> None:
    """MXNet's initializers as SageMaker's Seq2Seq uses them: ``xavier`` draws uniformly from ±sqrt(scale / fan)
    (fan: ``in``, ``out`` or their ``avg``), ``uniform`` from ±scale; biases start at zero."""
    for name, p in module.named_parameters():
        if p.dim() < 2:  # biases start at zero; layer-norm gains keep their 1
            if name.endswith("bias"):
                nn.init.zeros_(p)
            continue
        if kind == "uniform":
            nn.init.uniform_(p, -scale, scale)
            continue
        fan_out, fan_in = p.shape[0], p[0].numel()
        fan = {"in": fan_in, "out": fan_out, "avg": (fan_in + fan_out) / 2}[factor]
        bound = math.sqrt(scale / fan)
        nn.init.uniform_(p, -bound, bound)
    for m in module.modules():  # padding embeddings stay zero
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()


def sinusoids(length: int, dim: int) -> torch.Tensor:
    """Vaswani et al.'s fixed positional encodings, ``(length, dim)``."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : dim // 2]
    return table


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where ``mask`` is true (``mask`` broadcasts against ``scores``)."""
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


def lengths_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)``: true at the valid positions of each sequence."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class Projection(nn.Module):
    """A linear map when sizes differ, else nothing (keeps the parameter list free of identities)."""

    def __init__(self, size_in: int, size_out: int):
        super().__init__()
        self.linear = nn.Linear(size_in, size_out) if size_in != size_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.linear is None else self.linear(x)

"""Transformer layers (pre-norm, as Sockeye's) with what decoding needs: cached keys and values, so each
decoding step costs one position, and the cross-attention probabilities (the attention matrix)."""

from __future__ import annotations

import math

import torch
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, size: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.depth = heads, size // heads
        self.q = nn.Linear(size, size)
        self.kv = nn.Linear(size, 2 * size)
        self.out = nn.Linear(size, size)
        self.dropout = nn.Dropout(dropout)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.depth).transpose(1, 2)  # (B, h, T, d)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries from ``x`` (B, T, D) over keys/values (B, h, S, d); ``mask`` broadcasts to (B, h, T, S).
        Returns the output (B, T, D) and the probabilities averaged over heads (B, T, S)."""
        q = self.split(self.q(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.depth)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out = (self.dropout(probs) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.out(out), probs.mean(dim=1)


class TransformerLayer(nn.Module):
    def __init__(self, size: int, heads: int, ff: int, dropout: float, cross: bool):
        super().__init__()
        self.norm_self = nn.LayerNorm(size)
        self.self_attention = MultiHeadAttention(size, heads, dropout)
        self.cross = cross
        if cross:
            self.norm_cross = nn.LayerNorm(size)
            self.cross_attention = MultiHeadAttention(size, heads, dropout)
        self.norm_ff = nn.LayerNorm(size)
        self.ff = nn.Sequential(nn.Linear(size, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, size))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, self_mask, memory_kv=None, memory_mask=None, cache=None):
        """``cache`` (decoding): a dict holding this layer's keys/values of earlier positions; updated in place.
        Returns ``x`` (encoder layers) or ``(x, cross-attention probabilities)`` (decoder layers)."""
        h = self.norm_self(x)
        k, v = self.self_attention.keys_values(h)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        out, _ = self.self_attention.attend(h, k, v, self_mask)
        x = x + self.dropout(out)
        probs = None
        if self.cross:
            out, probs = self.cross_attention.attend(self.norm_cross(x), *memory_kv, memory_mask)
            x = x + self.dropout(out)
        x = x + self.dropout(self.ff(self.norm_ff(x)))
        return (x, probs) if self.cross else x

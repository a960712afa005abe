"""Seq2Seq decoders. Each trains on a whole target at once (teacher forcing: ``forward``) and decodes one
position at a time (``start`` then ``step``), carrying its state as a dict of tensors whose first axis is
the batch, so beam search can reorder any decoder's state the same way."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import NetworkConfig
from .encoders import SQRT_HALF, ConvBlock, Encoded
from .layers import Projection, masked_softmax, sinusoids
from .transformer import TransformerLayer

State = dict[str, torch.Tensor]


class RNNAttention(nn.Module):
    """Attention of an RNN decoder over the encoder's positions: mlp (Bahdanau's / Luong's concat), dot,
    bilinear (Luong's general) or fixed (the last valid position: no attention)."""

    def __init__(self, kind: str, query: int, memory: int, hidden: int):
        super().__init__()
        self.kind = kind
        if kind == "mlp":
            self.keys = nn.Linear(memory, hidden, bias=False)
            self.query = nn.Linear(query, hidden)
            self.score = nn.Linear(hidden, 1, bias=False)
        elif kind == "dot":
            self.query = Projection(query, memory)
        elif kind == "bilinear":
            self.query = nn.Linear(query, memory, bias=False)

    def prepare(self, memory: torch.Tensor) -> torch.Tensor:
        """What the scores compare queries against, computed once per sentence."""
        return self.keys(memory) if self.kind == "mlp" else memory

    def forward(self, q, keys, memory, mask, lengths):
        if self.kind == "fixed":
            probs = nn.functional.one_hot((lengths - 1).clamp(min=0), memory.shape[1]).to(memory.dtype)
        else:
            if self.kind == "mlp":
                scores = self.score(torch.tanh(keys + self.query(q)[:, None, :])).squeeze(-1)
            else:
                scores = (keys @ self.query(q)[:, :, None]).squeeze(-1)
            probs = masked_softmax(scores, mask)
        return (probs[:, None, :] @ memory).squeeze(1), probs


class RNNDecoder(nn.Module):
    """Sockeye's RNN decoder: input feeding (the previous attentional hidden state joins the embedding),
    attention from the first layer's output fed to the upper layers (``rnn_attention_in_upper_layers``) or
    from the top layer's, and a hidden state ``tanh(W [rnn output; context])`` before the output layer."""

    def __init__(self, c: NetworkConfig):
        super().__init__()
        hidden, memory = c.rnn_num_hidden, c.encoder_size
        self.hidden, self.lstm = hidden, c.rnn_cell_type == "lstm"
        self.embed = nn.Embedding(c.target_vocab, c.num_embed_target, padding_idx=0)
        self.dropout = nn.Dropout(c.embed_dropout_target)
        cell = nn.LSTMCell if self.lstm else nn.GRUCell
        self.upper_attention = c.rnn_attention_in_upper_layers and c.num_layers_decoder > 1
        self.cells = nn.ModuleList([cell(c.num_embed_target + hidden, hidden)])
        for _ in range(1, c.num_layers_decoder):
            self.cells.append(cell(hidden + (memory if self.upper_attention else 0), hidden))
        self.residual_from = c.rnn_first_residual_layer if c.rnn_residual_connections else None
        self.attention = RNNAttention(c.rnn_attention_type, hidden, memory, c.rnn_attention_num_hidden or hidden)
        self.state_init = c.rnn_decoder_state_init
        if self.state_init != "zero":
            self.init = nn.ModuleList([nn.Linear(memory, hidden) for _ in self.cells])
        self.combine = nn.Linear(hidden + memory, hidden)
        self.hidden_dropout = nn.Dropout(c.rnn_decoder_hidden_dropout)
        self.output = nn.Linear(hidden, c.target_vocab)

    def start(self, enc: Encoded) -> State:
        b = enc.memory.shape[0]
        state: State = {"memory": enc.memory, "mask": enc.mask, "lengths": enc.lengths,
                        "keys": self.attention.prepare(enc.memory),
                        "feed": enc.memory.new_zeros(b, self.hidden)}
        if self.state_init == "last":
            summary = enc.memory[torch.arange(b, device=enc.memory.device), (enc.lengths - 1).clamp(min=0)]
        elif self.state_init == "avg":
            keep = enc.mask[:, :, None].to(enc.memory.dtype)
            summary = (enc.memory * keep).sum(1) / keep.sum(1).clamp(min=1)
        for i in range(len(self.cells)):
            h = torch.tanh(self.init[i](summary)) if self.state_init != "zero" else enc.memory.new_zeros(b, self.hidden)
            state[f"h{i}"] = h
            if self.lstm:
                state[f"c{i}"] = torch.zeros_like(h)
        return state

    def step(self, prev: torch.Tensor, state: State, t: int = 0):
        x = torch.cat([self.dropout(self.embed(prev)), state["feed"]], dim=-1)
        new: State = dict(state)
        context = probs = None
        for i, cell in enumerate(self.cells):
            if i > 0 and self.upper_attention:
                x = torch.cat([x, context], dim=-1)
            if self.lstm:
                h, c = cell(x, (state[f"h{i}"], state[f"c{i}"]))
                new[f"c{i}"] = c
            else:
                h = cell(x, state[f"h{i}"])
            new[f"h{i}"] = h
            residual = self.residual_from is not None and i + 1 >= self.residual_from and i > 0
            out = h + x[:, : self.hidden] if residual else h
            if i == 0 and self.upper_attention:
                context, probs = self.attention(out, state["keys"], state["memory"], state["mask"], state["lengths"])
            x = out
        if context is None:
            context, probs = self.attention(x, state["keys"], state["memory"], state["mask"], state["lengths"])
        feed = self.hidden_dropout(torch.tanh(self.combine(torch.cat([x, context], dim=-1))))
        new["feed"] = feed
        return self.output(feed), probs, new

    def forward(self, tgt_in: torch.Tensor, enc: Encoded):
        state = self.start(enc)
        logits, attention = [], []
        for t in range(tgt_in.shape[1]):
            out, probs, state = self.step(tgt_in[:, t], state, t)
            logits.append(out)
            attention.append(probs)
        return torch.stack(logits, 1), torch.stack(attention, 1)


class CNNDecoder(nn.Module):
    """Gehring et al.'s convolutional decoder: causal gated convolutions, each layer attending over the encoder."""

    def __init__(self, c: NetworkConfig):
        super().__init__()
        hidden = c.cnn_num_hidden
        self.width = c.cnn_kernel_width_decoder
        self.embed = nn.Embedding(c.target_vocab, c.num_embed_target, padding_idx=0)
        self.positions = nn.Embedding(c.max_seq_len_target + 2, c.num_embed_target)
        self.dropout = nn.Dropout(c.embed_dropout_target)
        self.project = nn.Linear(c.num_embed_target, hidden)
        self.memory = Projection(c.encoder_size, hidden)
        self.blocks = nn.ModuleList([ConvBlock(hidden, self.width, c.cnn_activation_type, c.cnn_hidden_dropout,
                                               causal=True) for _ in range(c.num_layers_decoder)])
        self.scale = 1 / math.sqrt(hidden)
        self.output = nn.Linear(hidden, c.target_vocab)

    def _inputs(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.project(self.dropout(self.embed(tokens) + self.positions(positions)))

    def _attend(self, h, keys, mask):
        probs = masked_softmax((h @ keys.transpose(1, 2)) * self.scale, mask[:, None, :])
        return (h + probs @ keys) * SQRT_HALF, probs

    def forward(self, tgt_in: torch.Tensor, enc: Encoded):
        keys = self.memory(enc.memory)
        x = self._inputs(tgt_in, torch.arange(tgt_in.shape[1], device=tgt_in.device)[None])
        probs = None
        for block in self.blocks:
            h, probs = self._attend(block(x), keys, enc.mask)
            x = (h + x) * SQRT_HALF
        return self.output(x), probs

    def start(self, enc: Encoded) -> State:
        keys = self.memory(enc.memory)
        state: State = {"keys": keys, "mask": enc.mask}
        for i in range(len(self.blocks)):
            state[f"window{i}"] = keys.new_zeros(keys.shape[0], self.width - 1, keys.shape[2])
        return state

    def step(self, prev: torch.Tensor, state: State, t: int = 0):
        position = torch.full_like(prev, t)
        x = self._inputs(prev, position)
        new: State = dict(state)
        probs = None
        for i, block in enumerate(self.blocks):
            window = torch.cat([state[f"window{i}"], x[:, None, :]], dim=1)
            new[f"window{i}"] = window[:, 1:]
            h, probs = self._attend(block.window(window)[:, None, :], state["keys"], state["mask"])
            x = (h[:, 0] + x) * SQRT_HALF
        return self.output(x), probs[:, 0], new


class TransformerDecoder(nn.Module):
    def __init__(self, c: NetworkConfig):
        super().__init__()
        size = c.transformer_model_size
        self.embed = nn.Embedding(c.target_vocab, c.num_embed_target, padding_idx=0)
        self.project = Projection(c.num_embed_target, size)
        self.memory = Projection(c.encoder_size, size)
        self.scale = math.sqrt(size)
        self.register_buffer("positions", sinusoids(c.max_seq_len_target + 2, size), persistent=False)
        self.dropout = nn.Dropout(max(c.embed_dropout_target, c.transformer_dropout))
        self.layers = nn.ModuleList([TransformerLayer(size, c.transformer_attention_heads,
                                                      c.transformer_feed_forward_num_hidden, c.transformer_dropout,
                                                      cross=True) for _ in range(c.num_layers_decoder)])
        self.norm = nn.LayerNorm(size)
        self.output = nn.Linear(size, c.target_vocab)

    def _inputs(self, tokens, positions):
        return self.dropout(self.project(self.embed(tokens)) * self.scale + self.positions[positions])

    def forward(self, tgt_in: torch.Tensor, enc: Encoded):
        t = tgt_in.shape[1]
        memory = self.memory(enc.memory)
        causal = torch.ones(t, t, dtype=torch.bool, device=tgt_in.device).tril()[None, None]
        memory_mask = enc.mask[:, None, None, :]
        x = self._inputs(tgt_in, torch.arange(t, device=tgt_in.device)[None].expand_as(tgt_in))
        probs = None
        for layer in self.layers:
            x, probs = layer(x, causal, layer.cross_attention.keys_values(memory), memory_mask)
        return self.output(self.norm(x)), probs

    def start(self, enc: Encoded) -> State:
        memory = self.memory(enc.memory)
        state: State = {"mask": enc.mask}
        for i, layer in enumerate(self.layers):
            state[f"mk{i}"], state[f"mv{i}"] = layer.cross_attention.keys_values(memory)
        return state

    def step(self, prev: torch.Tensor, state: State, t: int = 0):
        x = self._inputs(prev[:, None], torch.full_like(prev[:, None], t))
        new: State = dict(state)
        memory_mask = state["mask"][:, None, None, :]
        probs = None
        for i, layer in enumerate(self.layers):
            cache = {"k": state[f"k{i}"], "v": state[f"v{i}"]} if f"k{i}" in state else {}
            x, probs = layer(x, None, (state[f"mk{i}"], state[f"mv{i}"]), memory_mask, cache)
            new[f"k{i}"], new[f"v{i}"] = cache["k"], cache["v"]
        return self.output(self.norm(x[:, 0])), probs[:, 0], new


DECODERS = {"rnn": RNNDecoder, "cnn": CNNDecoder, "transformer": TransformerDecoder}

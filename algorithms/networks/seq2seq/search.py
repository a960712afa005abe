"""Batched beam search (greedy at beam 1) over any :class:`Seq2SeqNetwork`.

All sentences of a batch and all their hypotheses advance together: one decoder step per position for the
whole ``(batch × beam)`` block, the top ``beam`` continuations of each sentence chosen among ``beam × V``
candidates by total log-probability, the decoder states reordered by one ``index_select``. A hypothesis
that produced ``</s>`` stays finished (it can only extend with ``</s>`` at no cost). The answer of each
sentence is its finished hypothesis with the best log-probability per token (length normalization, so
beam search does not favour short outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .network import Seq2SeqNetwork


@dataclass
class Translations:
    tokens: list[list[int]]  # target ids per sentence, without </s>
    scores: list[float]  # log-probability per token of each (with </s>)
    attention: list[torch.Tensor] | None  # per sentence (target tokens, source positions), when asked


@torch.no_grad()
def beam_search(network: Seq2SeqNetwork, src: torch.Tensor, lengths: torch.Tensor, beam: int, max_len: int,
                bos: int, eos: int, attention: bool = False, pad: int = 0) -> Translations:
    """Translations of a padded batch ``src`` (B, S) with ``lengths``; at most ``max_len`` tokens each.
    ``<pad>`` and ``<s>`` are never produced."""
    b = src.shape[0]
    k = max(1, int(beam))
    encoded = network.encode(src, lengths)
    state = network.start(encoded)
    order = torch.arange(b, device=src.device).repeat_interleave(k)
    state = {name: t.index_select(0, order) for name, t in state.items()}
    scores = torch.full((b, k), float("-inf"), device=src.device)
    scores[:, 0] = 0.0
    prev = torch.full((b * k,), bos, dtype=torch.long, device=src.device)
    finished = torch.zeros(b * k, dtype=torch.bool, device=src.device)
    lengths_out = torch.zeros(b * k, dtype=torch.long, device=src.device)
    history = torch.zeros(b * k, 0, dtype=torch.long, device=src.device)
    attn_history = [] if attention else None
    base = (torch.arange(b, device=src.device) * k)[:, None]
    for t in range(max_len + 1):
        logits, probs, state = network.step(prev, state, t)
        logits = logits.float()
        logits[:, pad] = float("-inf")
        logits[:, bos] = float("-inf")
        logp = torch.log_softmax(logits, dim=-1)
        if t == max_len:  # out of room: end every open hypothesis here
            forced = torch.full_like(logp, float("-inf"))
            forced[:, eos] = logp[:, eos]
            logp = forced
        done_row = torch.full_like(logp[0], float("-inf"))
        done_row[eos] = 0.0
        logp = torch.where(finished[:, None], done_row[None, :], logp)
        vocab = logp.shape[1]
        candidates = (scores.reshape(-1, 1) + logp).view(b, k * vocab)
        scores, picked = candidates.topk(k, dim=1)
        rows = (base + picked // vocab).reshape(-1)
        tokens = (picked % vocab).reshape(-1)
        state = {name: v.index_select(0, rows) for name, v in state.items()}
        was_finished = finished.index_select(0, rows)
        lengths_out = lengths_out.index_select(0, rows) + (~was_finished).long()
        history = torch.cat([history.index_select(0, rows), tokens[:, None]], dim=1)
        if attn_history is not None:
            attn_history = [a.index_select(0, rows) for a in attn_history] + [probs.index_select(0, rows)]
        finished = was_finished | (tokens == eos)
        prev = tokens
        if bool(finished.all()):
            break
    normalized = scores.reshape(-1) / lengths_out.clamp(min=1).float()
    best = normalized.view(b, k).argmax(dim=1) + base[:, 0]
    out_tokens, out_scores, out_attention = [], [], [] if attention else None
    for row in best.tolist():
        n = int(lengths_out[row]) - 1  # without </s>
        seq = history[row, : n + 1].tolist()
        if eos in seq:
            seq = seq[: seq.index(eos)]
        out_tokens.append(seq)
        out_scores.append(float(normalized[row]))
        if out_attention is not None:
            out_attention.append(torch.stack([a[row] for a in attn_history[: len(seq)]]) if seq
                                 else src.new_zeros((0, src.shape[1]), dtype=torch.float32))
    return Translations(out_tokens, out_scores, out_attention)

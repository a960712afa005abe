"""NTM's network: a variational encoder-decoder over bag-of-words (NVDM / GSM, Miao et al. 2016 and 2017).

The encoder (an MLP of ``encoder_layers``, optionally batch-normalized) maps a document's word counts to the
mean and log-variance of a Gaussian (each batch-normalized, as ProdLDA does, which keeps the posterior from
collapsing onto the prior); a sample ``z`` (its mean at inference) becomes the topic weights
``θ = softmax(z)``. The decoder is a product of topic experts (as ProdLDA): ``p(w | θ) = softmax(BN(θ β) + b)``,
with ``b`` started at the corpus' log word frequencies so topics need only model departures from them. The
batch normalization of ``θ β`` (ProdLDA's remedy) keeps the topics' signal on the scale of ``b``: without it the
decoder learns the background alone and the encoder's posterior collapses onto the prior (KL near 0). The
loss of a document is the negative ELBO: reconstruction ``-Σ_w c_w log p(w | θ)`` plus the KL divergence of
the Gaussian from the standard normal prior. Row ``k`` of ``β`` ranks topic ``k``'s words.

Counts enter the encoder as ``log(1 + c)`` (long documents do not saturate the first layer). With a large
vocabulary a batch stays sparse: the first layer is a sparse-dense product and the reconstruction gathers the
log-probabilities of the words present; only the decoder's ``n × V`` output is dense, as its softmax needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

DENSE_MAX_WORDS = 4096  # up to this vocabulary, batches are dense tensors (faster than sparse kernels)


class BagOfWords:
    """One batch of word counts on a device, dense or sparse."""

    def __init__(self, counts: sp.csr_matrix, device: Any = "cpu"):
        counts = sp.csr_matrix(counts, dtype=np.float32)
        self.rows = counts.shape[0]
        self.words = float(counts.data.sum())
        self.sparse = counts.shape[1] > DENSE_MAX_WORDS
        if self.sparse:
            coo = counts.tocoo()
            index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)).to(device)
            values = torch.from_numpy(coo.data).to(device)
            self.index, self.values = index, values
            self.inputs = torch.sparse_coo_tensor(index, torch.log1p(values), counts.shape, is_coalesced=True,
                                                  check_invariants=False)
        else:
            self.counts = torch.from_numpy(counts.toarray()).to(device)
            self.inputs = torch.log1p(self.counts)

    def reconstruction(self, log_probs):
        """``-Σ_w c_w log p(w)`` per document."""
        if self.sparse:
            gathered = log_probs[self.index[0], self.index[1]] * self.values
            return -torch.zeros(self.rows, dtype=log_probs.dtype, device=log_probs.device).index_add_(
                0, self.index[0], gathered)
        return -(self.counts * log_probs).sum(dim=1)


_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


class TopicVAE(nn.Module):
    def __init__(self, vocabulary: int, num_topics: int, hidden: list[int], activation: str, batch_norm: bool):
        super().__init__()
        self.first = nn.Linear(vocabulary, hidden[0])
        layers: list[nn.Module] = []
        sizes = list(hidden)
        for i, size in enumerate(sizes):
            if i:
                layers.append(nn.Linear(sizes[i - 1], size))
            layers.append(_ACTIVATIONS[activation]())
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
        self.hidden = nn.Sequential(*layers)
        self.mean = nn.Linear(sizes[-1], num_topics)
        self.log_var = nn.Linear(sizes[-1], num_topics)
        self.mean_norm = nn.BatchNorm1d(num_topics, affine=False)
        self.log_var_norm = nn.BatchNorm1d(num_topics, affine=False)
        self.topics = nn.Parameter(torch.randn(num_topics, vocabulary) * 0.02)  # β
        self.background = nn.Parameter(torch.zeros(vocabulary))  # b
        self.decoder_norm = nn.BatchNorm1d(vocabulary, affine=False)

    def encode(self, bow: BagOfWords):
        x = bow.inputs
        h = torch.sparse.mm(x, self.first.weight.t()) + self.first.bias if x.is_sparse else self.first(x)
        h = self.hidden(h)
        return self.mean_norm(self.mean(h)), self.log_var_norm(self.log_var(h)).clamp(-10.0, 10.0)

    def log_word_probs(self, theta):
        return torch.log_softmax(self.decoder_norm(theta @ self.topics) + self.background, dim=1)

    def forward(self, bow: BagOfWords, sample: bool = True):
        """(reconstruction, KL) per document."""
        mean, log_var = self.encode(bow)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var) if sample else mean
        theta = torch.softmax(z, dim=1)
        reconstruction = bow.reconstruction(self.log_word_probs(theta))
        kl = 0.5 * (torch.exp(log_var) + mean * mean - 1.0 - log_var).sum(dim=1)
        return reconstruction, kl

    def topic_weights(self, bow: BagOfWords):
        mean, _ = self.encode(bow)
        return torch.softmax(mean, dim=1)


__all__ = ["DENSE_MAX_WORDS", "BagOfWords", "TopicVAE"]

"""NTM (SageMaker ``ntm``): the variational topic network trained by the shared neural trainer.

What is NTM's own: the network (:mod:`.network`), decoding this worker's bag-of-words batches (checked counts,
empty documents dropped and counted, ``sub_sample``), the loss (reconstruction + KL) and the evaluations
(``validation:total_loss`` per epoch, which drives early stopping; ``test:total_loss`` at the end). The
trainer (:mod:`algorithms.neural.trainer`) does DDP, lockstep uneven shards, checkpoints and early stopping.

Before training, one streamed pass sums the word counts (all workers' together) to start the decoder's
background at the corpus' log word frequencies. After it, the top words of each topic and their quality (TU;
WETC and NPMI, see :mod:`..topic_words`) go to the job's log and metrics, with the auxiliary channel's
vocabulary when given.
"""

from __future__ import annotations

import numpy as np

from ..bag_of_words import iter_documents
from ..base import Algorithm
from ..registry import register
from ..topic_words import Cooccurrence, coherence, read_embeddings, read_vocabulary, top_words, topic_uniqueness
from .model import NTMModel, build_network
from .params import HYPERPARAMETERS, clip_value, encoder_sizes

TOP_WORDS = 10  # per topic, for TU / WETC and the log, as SageMaker's NTM reports them
_SEED = 0x7E1


@register
class NTM(Algorithm):
    name = "ntm"
    hyperparameters = HYPERPARAMETERS
    model_class = NTMModel
    channels = ("train", "validation", "test", "auxiliary")

    def __init__(self, env):
        super().__init__(env)
        self.k = int(self.hp["num_topics"])
        self.hidden = encoder_sizes(self.hp["encoder_layers"], self.k)
        self.clip = clip_value(self.hp["clip_gradient"])
        self.rescale = float(self.hp["rescale_gradient"])
        self.sub_sample = float(self.hp["sub_sample"])
        self.batch = int(self.hp["mini_batch_size"])
        self.background: np.ndarray | None = None

    @classmethod
    def validate(cls, hyperparameters):
        values = super().validate(hyperparameters)
        clip_value(values["clip_gradient"])
        encoder_sizes(values["encoder_layers"], values["num_topics"])
        return values

    # Task ---------------------------------------------------------------------------------------------
    def network(self):
        import torch

        network = build_network(self.hp, self.feature_dim)
        with torch.no_grad():
            network.background.copy_(torch.from_numpy(self.background.astype(np.float32)))
        return network

    def optimizer(self, parameters):
        from ...neural.optim import make_optimizer

        name = self.hp["optimizer"]
        # MXNet's AdaDelta, which SageMaker's NTM runs, takes no learning rate: torch's is a multiplier, so 1.0
        lr = 1.0 if name == "adadelta" else float(self.hp["learning_rate"])
        return make_optimizer(name, parameters, lr=lr, weight_decay=float(self.hp["weight_decay"]),
                              eps=1e-5 if name == "adadelta" else 1e-8)

    def schedule(self, optimizer):
        return None

    def batches(self, epoch: int):
        from .network import BagOfWords

        train = self.env.require_channel("train")
        rng = np.random.default_rng([_SEED, epoch, self.env.rank])
        for docs in iter_documents(train, self.batch):
            counts = docs.counts
            if self.sub_sample < 1.0:
                counts = counts[rng.random(counts.shape[0]) < self.sub_sample]
            if counts.shape[0]:
                yield counts.shape[0], BagOfWords(counts)

    def loss(self, network, batch, device):
        batch = _to(batch, device)
        reconstruction, kl = network(batch)
        total = reconstruction + kl
        n = float(batch.rows)
        loss = total.mean()
        stats = {"total_loss": (float(total.detach().sum()), n),
                 "recon_loss": (float(reconstruction.detach().sum()), n),
                 "kl_divergence": (float(kl.detach().sum()), n)}
        # MXNet's rescale_grad multiplies the gradients before clipping: the same as scaling the loss
        return loss * self.rescale if self.rescale != 1.0 else loss, stats

    def evaluate(self, network, device) -> dict[str, float]:
        return self._score(network, device, "validation")

    def _score(self, network, device, channel: str) -> dict[str, float]:
        import torch

        from .network import BagOfWords

        data = self.env.channel(channel)
        if data is None:
            return {}
        collectives = self.env.collectives
        totals = np.zeros(4)  # reconstruction, KL, documents, words
        was_training = network.training
        network.eval()
        with torch.no_grad():
            part = _worker_part(data, collectives.rank, collectives.world_size)
            for docs in iter_documents(part, self.batch, channel):
                if docs.counts.shape[0]:
                    bow = _to(BagOfWords(docs.counts), device)
                    reconstruction, kl = network(bow, sample=False)
                    totals += (float(reconstruction.sum()), float(kl.sum()), bow.rows, bow.words)
        network.train(was_training)
        recon, kl, docs, words = collectives.allreduce(totals)
        if docs == 0:
            return {}
        return {f"{channel}:total_loss": (recon + kl) / docs, f"{channel}:recon_loss": recon / docs,
                f"{channel}:kl_divergence": kl / docs, f"{channel}:perplexity": float(np.exp((recon + kl) / words))}

    # Driver ------------------------------------------------------------------------------------------
    def train(self) -> NTMModel:
        from ...neural.trainer import Trainer, TrainSettings

        env = self.env
        vocabulary = read_vocabulary(env.channel("auxiliary"), self.feature_dim)
        self.background = self._log_frequencies()
        objective = "validation:total_loss" if env.channel("validation") is not None else "train:total_loss"
        settings = TrainSettings(max_epochs=int(self.hp["epochs"]), objective=objective,
                                 patience=int(self.hp["num_patience_epochs"]), tolerance=float(self.hp["tolerance"]),
                                 clip_gradient=self.clip, seed=_SEED)
        outcome = Trainer(env, settings).fit(self)
        network = outcome.network.cpu()
        model = NTMModel.from_network(env.hyperparameters, self.feature_dim, network, vocabulary)
        test = self._score(network, "cpu", "test")
        for name, value in test.items():
            env.reporter.metric(name, value)
        self._report_topics(model)
        return model

    def _log_frequencies(self) -> np.ndarray:
        """log p(w) of the training corpus (every worker's documents), add-one smoothed."""
        train = self.env.require_channel("train")
        sums = np.zeros(self.feature_dim + 1)
        for docs in iter_documents(train, 4096):
            sums[:-1] += np.asarray(docs.counts.sum(axis=0)).ravel()
            sums[-1] += docs.empty
        sums = self.env.collectives.allreduce(sums)
        empty = float(sums[-1])
        if empty:
            self.env.reporter.log(f"skipped {empty:.0f} empty document(s) of the train channel (no words)")
        self.env.reporter.metric("train:empty_documents", empty)
        counts = sums[:-1] + 1.0
        if counts.sum() <= self.feature_dim:
            raise ValueError("the train channel holds no words: NTM needs word counts")
        return np.log(counts / counts.sum())

    def _report_topics(self, model: NTMModel) -> None:
        """Top words, TU, WETC and NPMI: logged as SageMaker's NTM logs them, and as metrics."""
        env = self.env
        top = top_words(model.topics, TOP_WORDS)
        cooc = Cooccurrence(np.unique(top))
        for docs in iter_documents(env.require_channel("train"), 4096):
            cooc.update(docs.counts)
        cooc.load(env.collectives.allreduce(cooc.state()))
        vocabulary = model.vocabulary
        embeddings = read_embeddings(env.channel("auxiliary"), vocabulary, cooc.words) if vocabulary else {}
        wetc, npmi = coherence(top, cooc, embeddings)
        tu = topic_uniqueness(top)
        env.reporter.log(f"Topics from epoch:final (num_topics:{self.k}) [wetc {wetc.mean():.2f}, tu {tu.mean():.2f}]:")
        for i, row in enumerate(top.tolist()):
            words = " ".join(vocabulary[w] if vocabulary else str(w) for w in row)
            env.reporter.log(f"[{wetc[i]:.2f}, {tu[i]:.2f}] {words}")
        env.reporter.metric("topics:wetc", float(wetc.mean()))
        env.reporter.metric("topics:tu", float(tu.mean()))
        env.reporter.metric("topics:npmi", float(npmi.mean()))


def _to(bow, device):
    """The batch's tensors on ``device`` (a no-op on the CPU)."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return bow
    for name in ("index", "values", "inputs", "counts"):
        if hasattr(bow, name):
            setattr(bow, name, getattr(bow, name).to(device))
    return bow


def _worker_part(channel, rank: int, world_size: int):
    """This worker's files of a channel for split evaluation (every file when it is sharded among workers)."""
    from dataclasses import replace

    if world_size == 1 or channel.distribution != "FullyReplicated" or len(channel.files) < world_size:
        if channel.distribution == "FullyReplicated" and world_size > 1 and rank:
            return replace(channel, files=[])  # too few files to split: rank 0 scores them all
        return channel
    return replace(channel, files=channel.files[rank::world_size])


__all__ = ["NTM"]

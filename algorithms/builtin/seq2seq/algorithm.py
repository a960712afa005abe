"""SageMaker's Seq2Seq, trained by the shared neural trainer across the job's workers.

Channels as SageMaker's: ``train`` and ``validation`` (recordIO-protobuf, int32 ``source`` / ``target`` ids per
record) and ``vocab`` (``vocab.src.json``, ``vocab.trg.json``; optionally ``sentencepiece.model``). Each
worker reads its ``train`` shards into memory and trains on length-bucketed batches of
``batch_size / workers`` pairs (``batch_size`` is the whole update's, as SageMaker's multi-GPU
``batch_size`` is) with teacher forcing and label smoothing; DDP all-reduces the gradients. Every
``checkpoint_frequency_num_batches`` updates the validation channel is scored (perplexity, accuracy and,
when asked, BLEU of beam-search translations), the schedule and early stopping follow
``optimized_metric``, and the training state is checkpointed; the best checkpoint's weights are the model.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ... import fs as fsutil
from ...channel import FULLY_REPLICATED
from ...neural import optim
from ..base import Algorithm
from ..registry import register
from . import params
from .data import Corpus, epoch_batches, iter_batches, make_batch
from .metrics import bleu_from_statistics, bleu_statistics
from .model import Seq2SeqModel
from .tokenize import SENTENCEPIECE_FILE, Tokenizer
from .vocab import SOURCE_FILE, TARGET_FILE, Vocabulary

SEED = 0


@register
class Seq2Seq(Algorithm):
    name = "seq2seq"
    hyperparameters = params.SPEC
    model_class = Seq2SeqModel
    channels = ("train", "validation", "vocab")
    required_channels = ("train", "validation", "vocab")

    @classmethod
    def validate(cls, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        return params.validate(cls.hyperparameters.parse(hyperparameters))

    def __init__(self, env):
        super().__init__(env)
        params.validate(self.hp)

    def resolve_feature_dim(self) -> int:
        return int(self.hp["max_seq_len_source"])

    # ----------------------------------------------------------------------------------------------- data
    def read_vocabularies(self) -> tuple[Vocabulary, Vocabulary, Tokenizer]:
        files = {os.path.basename(path.rstrip("/")): path for path in self.env.require_channel("vocab").files}
        missing = [name for name in (SOURCE_FILE, TARGET_FILE) if name not in files]
        if missing:
            raise ValueError(f"the vocab channel lacks {' and '.join(missing)} (it holds: "
                             f"{', '.join(sorted(files)) or 'nothing'}); give it FullyReplicated so every worker "
                             "gets both")

        def read(name: str) -> bytes:
            fs, inner = fsutil.resolve(files[name])
            return fsutil.read_bytes(fs, inner)

        source = Vocabulary.from_json(read(SOURCE_FILE), f"vocab channel {SOURCE_FILE}")
        target = Vocabulary.from_json(read(TARGET_FILE), f"vocab channel {TARGET_FILE}")
        tokenizer = Tokenizer(read(SENTENCEPIECE_FILE)) if SENTENCEPIECE_FILE in files else Tokenizer()
        return source, target, tokenizer

    def validation_part(self, source: Vocabulary, target: Vocabulary) -> Corpus:
        """This worker's share of the validation pairs: every world_size-th of a replicated channel, else its
        own shards."""
        channel = self.env.require_channel("validation")
        corpus = Corpus.read(channel.files, "validation", source, target)
        c = self.env.collectives
        if channel.distribution == FULLY_REPLICATED and c.world_size > 1:
            corpus = corpus.take(range(c.rank, len(corpus), c.world_size))
        return corpus

    # ---------------------------------------------------------------------------------------------- train
    def train(self) -> Seq2SeqModel:
        from ...networks.seq2seq import NetworkConfig
        from ...neural.trainer import Trainer, TrainSettings

        hp = self.hp
        source, target, tokenizer = self.read_vocabularies()
        train = Corpus.read(self.env.require_channel("train").files, "train", source, target)
        validation = self.validation_part(source, target)
        config = NetworkConfig.from_hyperparameters(hp, len(source), len(target))
        task = Seq2SeqTask(self.env, hp, config, train, validation, source, target)
        metric = hp["optimized_metric"]
        settings = TrainSettings(
            max_epochs=hp["max_num_epochs"] or 2**62, min_epochs=hp["min_num_epochs"],
            max_steps=hp["max_num_batches"] if hp["max_num_batches"] > 0 else None,
            evaluate_every_steps=hp["checkpoint_frequency_num_batches"], objective=f"validation:{metric}",
            maximize=metric != "perplexity", patience=hp["checkpoint_threshold"],
            clip_gradient=hp["clip_gradient"] if hp["clip_gradient"] > 0 else None, seed=SEED)
        outcome = Trainer(self.env, settings).fit(task)
        weights = {k: v.detach().cpu().clone() for k, v in outcome.network.state_dict().items()}
        return Seq2SeqModel(self.hyperparameters.to_strings(hp), config, weights, source, target, tokenizer)


class Seq2SeqTask:
    """What the shared trainer needs: the network, its optimizer and schedule, batches, loss and evaluation."""

    def __init__(self, env, hp: dict[str, Any], config, train: Corpus, validation: Corpus, source: Vocabulary,
                 target: Vocabulary):
        self.env, self.hp, self.config = env, hp, config
        self.train, self.validation = train, validation
        self.source, self.target = source, target
        self.batch_size = max(1, math.ceil(hp["batch_size"] / env.world_size))
        self._planned: tuple[int, list[np.ndarray]] | None = None  # (epoch, its batches' rows)
        sample = hp["bleu_sample_size"]
        if sample == 0 and hp["optimized_metric"] == "bleu":
            sample = -1
        self.report_bleu = sample != 0
        self.bleu_rows = 0 if sample == 0 else len(validation) if sample < 0 else \
            min(len(validation), math.ceil(sample / env.world_size))

    def network(self):
        from ...networks.seq2seq import Seq2SeqNetwork

        return Seq2SeqNetwork(self.config)

    def optimizer(self, parameters):
        return optim.make_optimizer(self.hp["optimizer_type"], parameters, lr=self.hp["learning_rate"],
                                    momentum=self.hp["momentum"] or 0.0, weight_decay=self.hp["weight_decay"])

    def schedule(self, optimizer):
        kind, every = self.hp["lr_scheduler_type"], self.hp["checkpoint_frequency_num_batches"]
        half_life = self.hp["fixed_rate_lr_half_life"] * every  # updates until the rate halves
        if kind == "plateau_reduce":  # lower the rate once `threshold` checkpoints in a row did not improve
            return optim.ReduceOnPlateau(optimizer, self.hp["plateau_reduce_lr_factor"],
                                         max(0, self.hp["plateau_reduce_lr_threshold"] - 1))
        if kind == "fixed_rate_inv_t":  # lr / (1 + t / half_life)
            return optim.InverseTime(optimizer, half_life)
        return optim.InverseTime(optimizer, max(1, half_life // 3), sqrt=True)  # lr / sqrt(1 + 3 t / half_life)

    def _epoch(self, epoch: int) -> list[np.ndarray]:
        if self._planned is None or self._planned[0] != epoch:
            hp = self.hp
            self._planned = (epoch, epoch_batches(self.train, self.batch_size, hp["bucketing_enabled"],
                                                  hp["bucket_width"], hp["max_seq_len_source"],
                                                  hp["max_seq_len_target"], SEED * 1000 + self.env.rank, epoch))
        return self._planned[1]

    def num_batches(self, epoch: int) -> int:
        return len(self._epoch(epoch))

    def batches(self, epoch: int):
        hp = self.hp
        for rows in self._epoch(epoch):
            yield len(rows), make_batch([self.train.sources[r] for r in rows], [self.train.targets[r] for r in rows],
                                        hp["max_seq_len_source"], hp["max_seq_len_target"], self.target.bos,
                                        self.target.eos, self.source.eos)

    def _tensors(self, batch, device):
        import torch

        return (torch.from_numpy(batch.src).to(device), torch.from_numpy(batch.src_len).to(device),
                torch.from_numpy(batch.tgt_in).to(device), torch.from_numpy(batch.tgt_out).to(device))

    def loss(self, network, batch, device):
        import torch.nn.functional as F

        src, src_len, tgt_in, tgt_out = self._tensors(batch, device)
        logits = network(src, src_len, tgt_in)
        flat, gold = logits.reshape(-1, logits.shape[-1]).float(), tgt_out.reshape(-1)
        loss = F.cross_entropy(flat, gold, ignore_index=0, label_smoothing=self.hp["label_smoothing"])
        tokens = float((gold != 0).sum())
        if self.hp["training_metric"] == "accuracy":
            hits = float(((flat.argmax(-1) == gold) & (gold != 0)).sum())
            return loss, {"accuracy": (hits, tokens)}
        if self.hp["label_smoothing"]:  # the smoothed loss is not the likelihood: compute that apart
            nll = float(F.cross_entropy(flat.detach(), gold, ignore_index=0, reduction="sum"))
        else:
            nll = float(loss.detach()) * tokens
        return loss, {"perplexity": (nll, tokens)}

    def training_metric(self, name: str, mean: float) -> float:
        return math.exp(min(mean, 700.0)) if name == "perplexity" else mean

    def evaluate(self, network, device) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        from ...networks.seq2seq import beam_search

        hp = self.hp
        nll = hits = tokens = 0.0
        for batch in iter_batches(self.validation, 2 * self.batch_size, hp["max_seq_len_source"],
                                  hp["max_seq_len_target"], self.target.bos, self.target.eos, self.source.eos):
            src, src_len, tgt_in, tgt_out = self._tensors(batch, device)
            logits = network(src, src_len, tgt_in).float()
            flat, gold = logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1)
            nll += float(F.cross_entropy(flat, gold, ignore_index=0, reduction="sum"))
            hits += float(((flat.argmax(-1) == gold) & (gold != 0)).sum())
            tokens += float((gold != 0).sum())
        bleu = np.zeros(10, np.float64)
        if self.bleu_rows:
            sample = self.validation.take(range(self.bleu_rows))
            hypotheses = []
            for start in range(0, len(sample), 64):
                part = sample.take(range(start, min(len(sample), start + 64)))
                b = make_batch(part.sources, part.targets, hp["max_seq_len_source"], hp["max_seq_len_target"],
                               self.target.bos, self.target.eos, self.source.eos)
                result = beam_search(network, torch.from_numpy(b.src).to(device),
                                     torch.from_numpy(b.src_len).to(device), hp["beam_size"],
                                     hp["max_seq_len_target"], self.target.bos, self.target.eos)
                hypotheses.extend(" ".join(self.target.decode(tokens)) for tokens in result.tokens)
            references = [" ".join(self.target.decode(t[: hp["max_seq_len_target"]])) for t in sample.targets]
            bleu = bleu_statistics(hypotheses, references)
        totals = np.concatenate([[nll, hits, tokens], bleu])
        if self.env.world_size > 1:
            totals = self.env.collectives.allreduce(totals)
        nll, hits, tokens = totals[:3]
        metrics = {"validation:perplexity": math.exp(min(nll / max(tokens, 1.0), 700.0)),
                   "validation:accuracy": hits / max(tokens, 1.0)}
        if self.report_bleu:
            metrics["validation:bleu"] = bleu_from_statistics(totals[3:])
        return metrics

"""Sockeye's synthetic digit tasks (copy and sort) as SageMaker Seq2Seq channels, and training them in-process."""

from __future__ import annotations

import os
import random
from pathlib import Path

from algorithms.builtin.seq2seq import records
from algorithms.builtin.seq2seq.vocab import SOURCE_FILE, TARGET_FILE, Vocabulary
from algorithms.training import ChannelInput, Reporter, TrainingEnv

DIGITS = "0123456789"
# Sockeye's system tests: 10k training lines (100 of them empty), 100 validation lines, 110 test lines (10
# empty), lengths 1..9 (with </s>: at most 10), seeds 13 / 17 for train / dev.
TRAIN_LINES, TRAIN_EMPTY, DEV_LINES, TEST_LINES, TEST_EMPTY, MAX_LEN = 10000, 100, 100, 110, 10, 9


def digit_pairs(count: int, seed: int, sort: bool = False, empty: int = 0, max_len: int = MAX_LEN):
    """Sockeye's ``generate_digits_file``: random digit sequences; the target is the source, or it sorted."""
    rng = random.Random(seed)
    lines = [[rng.choice(DIGITS) for _ in range(rng.randint(1, max_len))] for _ in range(count - empty)]
    lines += [[] for _ in range(empty)]
    rng.shuffle(lines)
    return [(" ".join(d), " ".join(sorted(d) if sort else d)) for d in lines]


def write_channels(folder: Path, train, validation, shards: int = 1) -> dict[str, list[str]]:
    """SageMaker's three channels (as the example preprocessing writes them: empty lines skipped)."""
    vocab = Vocabulary.build({d: 1 for d in DIGITS})
    out = {"train": [], "validation": [], "vocab": []}
    for name, pairs in (("train", train), ("validation", validation)):
        kept = [(s, t) for s, t in pairs if s and t]
        (folder / name).mkdir(parents=True, exist_ok=True)
        for k in range(shards if name == "train" else 1):
            part = kept[k::shards] if name == "train" else kept
            path = folder / name / f"part-{k}.rec"
            path.write_bytes(records.encode(source=[vocab.encode(s.split()) for s, _ in part],
                                            target=[vocab.encode(t.split()) for _, t in part]))
            out[name].append(str(path))
    (folder / "vocab").mkdir(parents=True, exist_ok=True)
    for name in (SOURCE_FILE, TARGET_FILE):
        (folder / "vocab" / name).write_text(vocab.to_json())
        out["vocab"].append(str(folder / "vocab" / name))
    return out


class Recorder(Reporter):
    def __init__(self):
        super().__init__()
        self.metrics: list[tuple[str, float, int | None]] = []
        self.logs: list[str] = []

    def metric(self, name, value, epoch=None, step=None):
        super().metric(name, value, epoch, step)
        self.metrics.append((name, value, step))

    def log(self, message):
        self.logs.append(message)

    def values(self, name: str) -> list[float]:
        return [v for n, v, _ in self.metrics if n == name]


def make_env(files: dict[str, list[str]], hyperparameters: dict, model_dir: str, rank: int = 0, world: int = 1,
             collectives=None, checkpoint_dir: str | None = None, replicated_validation: bool = True) -> TrainingEnv:
    channels = {"train": ChannelInput("train", files["train"] if world == 1 else files["train"][rank::world]),
                "validation": ChannelInput("validation", files["validation"],
                                           distribution="FullyReplicated" if replicated_validation else
                                           "ShardedByKey"),
                "vocab": ChannelInput("vocab", files["vocab"], distribution="FullyReplicated")}
    kwargs = {} if collectives is None else {"collectives": collectives}
    return TrainingEnv({k: str(v) for k, v in hyperparameters.items()}, channels, model_dir, rank=rank,
                       hosts=[f"algo-{i + 1}" for i in range(world)], reporter=Recorder(),
                       checkpoint_dir=checkpoint_dir, **kwargs)


TRANSFORMER = {  # Sockeye's copy gate: 2 layers, model size 32, 4 heads, feed-forward 64, embeddings 32
    "encoder_type": "transformer", "decoder_type": "transformer", "num_layers_encoder": 2, "num_layers_decoder": 2,
    "transformer_model_size": 32, "transformer_attention_heads": 4, "transformer_feed_forward_num_hidden": 64,
    "num_embed_source": 32, "num_embed_target": 32, "max_seq_len_source": 10, "max_seq_len_target": 10,
    "batch_size": 64, "learning_rate": 0.003, "checkpoint_frequency_num_batches": 100, "max_num_batches": 300,
    "bleu_sample_size": -1, "beam_size": 1,
}


def threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("SPARK_ML_TEST_TORCH_THREADS", "1")))

"""Seq2Seq: Sockeye's system-test gates on its synthetic digit tasks, 1- vs 2-worker training, beam search,
and the parts (hyperparameters, artifacts, attention) against independent expectations.

Sizes: the copy gate is Sockeye's in full (10k training lines of up to 9 digits, a 2-layer size-32
transformer; perplexity <= 1.02, BLEU >= 0.98 on its 110-line test set). The other gates are smaller so the
file stays near a minute and a half on two loaded cores: sort on sequences of up to 5 digits (Sockeye's: 9),
the RNN with GRU cells and the 1- vs 2-worker comparison with the CNN, which converges in fewest updates.
``benchmarks/seq2seq.py --gates`` runs the full-size sort, LSTM and 2-worker transformer gates."""

from __future__ import annotations

import multiprocessing
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sacrebleu")

sys.path.insert(0, os.path.dirname(__file__))
from _file_collectives import FileCollectives  # noqa: E402
from _seq2seq_support import (  # noqa: E402
    DEV_LINES,
    TEST_EMPTY,
    TEST_LINES,
    TRAIN_EMPTY,
    TRAIN_LINES,
    TRANSFORMER,
    digit_pairs,
    make_env,
    threads,
    write_channels,
)

from algorithms.builtin import load_model, save_model  # noqa: E402
from algorithms.builtin.seq2seq import Seq2Seq, Seq2SeqModel  # noqa: E402
from algorithms.builtin.seq2seq.metrics import corpus_bleu  # noqa: E402
from algorithms.hyperparameters import HyperparameterError  # noqa: E402


def train(tmp, sort: bool, hyperparameters: dict, name: str, max_len: int = 9):
    threads()
    files = write_channels(tmp / name, digit_pairs(TRAIN_LINES, 13, sort, TRAIN_EMPTY, max_len),
                           digit_pairs(DEV_LINES, 17, sort, max_len=max_len))
    env = make_env(files, hyperparameters, str(tmp / name / "model"))
    model = Seq2Seq(env).train()
    return model, env.reporter


def held_out_bleu(model: Seq2SeqModel, sort: bool, beam: int | None = None, max_len: int = 9) -> float:
    """Corpus BLEU (0-1, sacrebleu, no tokenization) on Sockeye's 110-line test set (10 empty lines)."""
    pairs = digit_pairs(TEST_LINES, 42, sort, TEST_EMPTY, max_len)
    hypotheses = [text for text, _ in model.translate([s for s, _ in pairs], beam_size=beam)]
    return corpus_bleu(hypotheses, [t for _, t in pairs])


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory):
    return train(tmp_path_factory.mktemp("copy"), False, TRANSFORMER, "transformer")


def test_transformer_learns_copy_to_sockeyes_gate(copy_model):
    model, reporter = copy_model
    assert min(reporter.values("validation:perplexity")) <= 1.02
    assert held_out_bleu(model, sort=False) >= 0.98
    assert reporter.values("validation:bleu")[-1] >= 0.98
    assert reporter.values("train:perplexity")[-1] < reporter.values("train:perplexity")[0]


def test_transformer_learns_sort_to_sockeyes_gate_on_shorter_sequences(tmp_path):
    hp = {**TRANSFORMER, "transformer_attention_heads": 2, "learning_rate": 0.002,
          "checkpoint_frequency_num_batches": 50}
    model, reporter = train(tmp_path, True, hp, "sort", max_len=5)
    assert min(reporter.values("validation:perplexity")) <= 1.03
    assert held_out_bleu(model, sort=True, max_len=5) >= 0.97


RNN = {"encoder_type": "rnn", "decoder_type": "rnn", "rnn_num_hidden": 64, "rnn_cell_type": "gru",
       "rnn_attention_type": "mlp", "learning_rate": 0.01, "max_num_batches": 150}
CNN = {"encoder_type": "cnn", "decoder_type": "cnn", "cnn_num_hidden": 64, "num_layers_encoder": 2,
       "num_layers_decoder": 2, "learning_rate": 0.003, "max_num_batches": 200}
SMALL = {"num_embed_source": 32, "num_embed_target": 32, "max_seq_len_source": 10, "max_seq_len_target": 10,
         "batch_size": 64, "checkpoint_frequency_num_batches": 50, "beam_size": 1, "bleu_sample_size": -1}


def test_the_rnn_with_attention_learns_copy(tmp_path):
    model, _ = train(tmp_path, False, {**SMALL, **RNN}, "rnn")
    assert held_out_bleu(model, sort=False) >= 0.95


@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory):
    return train(tmp_path_factory.mktemp("cnn"), False, {**SMALL, **CNN}, "cnn")


def test_the_cnn_learns_copy(cnn_model):
    model, reporter = cnn_model
    assert held_out_bleu(model, sort=False) >= 0.95
    assert min(reporter.values("validation:perplexity")) <= 1.02


def test_beam_search_scores_at_least_greedy(copy_model):
    model, _ = copy_model
    pairs = digit_pairs(TEST_LINES, 42, False, TEST_EMPTY)
    sources = [model.source_vocab.encode(s.split()) for s, _ in pairs]
    greedy = model.translate_ids(sources, beam_size=1)
    beam = model.translate_ids(sources, beam_size=5)
    assert held_out_bleu(model, False, beam=5) >= held_out_bleu(model, False, beam=1)
    # the beam keeps the greedy path among its hypotheses, so its best log-probability is at least greedy's
    scores = [_log_probability(model, s, t.tokens) for s, t in zip(sources, greedy, strict=True)]
    better = [_log_probability(model, s, t.tokens) for s, t in zip(sources, beam, strict=True)]
    assert np.mean(better) >= np.mean(scores) - 1e-6


def _log_probability(model: Seq2SeqModel, source, target) -> float:
    """Per-token log-probability of ``target`` (with </s>) given ``source``, by teacher forcing."""
    net = model.network()
    src = torch.tensor([[*source[:10], model.source_vocab.eos]])
    tgt_in = torch.tensor([[model.target_vocab.bos, *target]])
    gold = torch.tensor([*target, model.target_vocab.eos])
    with torch.no_grad():
        logp = torch.log_softmax(net(src, torch.tensor([src.shape[1]]), tgt_in)[0], -1)
    return float(logp[torch.arange(len(gold)), gold].mean())


def _worker(folder: str, rank: int, out: str) -> None:
    from pathlib import Path

    threads()
    files = write_channels(Path(folder) / "data", digit_pairs(TRAIN_LINES, 13, False, TRAIN_EMPTY),
                           digit_pairs(DEV_LINES, 17, False), shards=2) if rank == 0 else None
    collectives = FileCollectives(folder, rank, 2)
    collectives.barrier()
    if files is None:
        files = {"train": [f"{folder}/data/train/part-{k}.rec" for k in range(2)],
                 "validation": [f"{folder}/data/validation/part-0.rec"],
                 "vocab": [f"{folder}/data/vocab/vocab.src.json", f"{folder}/data/vocab/vocab.trg.json"]}
    env = make_env(files, {**SMALL, **CNN}, f"{folder}/model-{rank}", rank=rank, world=2, collectives=collectives)
    model = Seq2Seq(env).train()
    flat = torch.cat([v.flatten().float() for v in model.weights.values()]).numpy()
    np.savez(out, weights=flat, perplexity=min(env.reporter.values("validation:perplexity")),
             bleu=held_out_bleu(model, sort=False))


def test_two_workers_reach_the_same_gates_as_one(tmp_path, cnn_model):
    """The same configuration and seed on one worker (``cnn_model``) and on two (each half of the batch, DDP)."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), rank, str(tmp_path / f"out{rank}.npz")))
             for rank in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    a, b = (np.load(tmp_path / f"out{r}.npz") for r in (0, 1))
    np.testing.assert_array_equal(a["weights"], b["weights"])  # DDP: one model
    assert float(a["perplexity"]) <= 1.02 and float(a["bleu"]) >= 0.98
    model, reporter = cnn_model
    assert min(reporter.values("validation:perplexity")) <= 1.02 and held_out_bleu(model, False) >= 0.98


def test_the_artifact_round_trips(tmp_path, copy_model):
    model, _ = copy_model
    manifest = save_model(model, str(tmp_path / "artifact"))
    assert set(manifest.files) == {"model.pt", "network.json", "vocab.src.json", "vocab.trg.json"}
    loaded = load_model(str(tmp_path / "artifact"))
    sentences = ["1 2 3", "9 8 7 6 5 4 3 2 1", "4 x 4"]
    assert loaded.translate(sentences) == model.translate(sentences)
    four = loaded.source_vocab.ids["4"]
    assert loaded.source_vocab.encode(["4", "x", "4"]).tolist() == [four, loaded.source_vocab.unk, four]
    again = Seq2SeqModel.from_arrays(model.to_arrays(), model.hyperparameters, model.feature_dim)
    assert again.translate(sentences) == model.translate(sentences)


def test_attention_matrices_have_a_row_per_target_and_a_column_per_source_token(copy_model):
    model, _ = copy_model
    (text, matrix), = model.translate(["3 1 4 1 5"], attention=True)
    assert text == "3 1 4 1 5" and matrix.shape == (5, 5)
    assert np.all(matrix >= 0) and np.all(matrix.sum(1) <= 1 + 1e-5)
    long = " ".join(["7"] * 25)  # truncated to max_seq_len_source = 10 tokens
    (text, matrix), = model.translate([long], attention=True)
    assert matrix.shape[1] == 10


def test_hyperparameters_are_checked_as_sagemaker_checks_them():
    with pytest.raises(HyperparameterError, match="rnn_num_hidden: must be even"):
        Seq2Seq.validate({"rnn_num_hidden": "31"})
    with pytest.raises(HyperparameterError, match="momentum: applies to optimizer_type sgd only"):
        Seq2Seq.validate({"momentum": "0.9"})
    with pytest.raises(HyperparameterError, match="transformer_model_size: 30 is not divisible"):
        Seq2Seq.validate({"encoder_type": "transformer", "transformer_model_size": "30"})
    with pytest.raises(HyperparameterError, match="rnn_attention_type: must be one of mlp, dot, bilinear, fixed"):
        Seq2Seq.validate({"rnn_attention_type": "luong"})
    with pytest.raises(HyperparameterError, match="min_num_epochs: 3 exceeds max_num_epochs=2"):
        Seq2Seq.validate({"min_num_epochs": "3", "max_num_epochs": "2"})
    parsed = Seq2Seq.validate({"optimizer_type": "sgd", "momentum": "0.9", "bucketing_enabled": "False"})
    assert parsed["batch_size"] == 64 and parsed["rnn_num_hidden"] == 1024 and parsed["bucketing_enabled"] is False
    assert parsed["checkpoint_frequency_num_batches"] == 1000 and parsed["optimized_metric"] == "perplexity"

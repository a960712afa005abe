"""Seq2Seq: our fit vs the same model and loop as a plain PyTorch script under ``TorchDistributor``, and our
beam-search ``transform`` vs a single-process batched greedy loop. ``--gates`` runs Sockeye's full-size gates.

    .venv/bin/python benchmarks/seq2seq.py [--pairs 200000] [--updates 1000] [--language fr] [--sentences 2000]
    .venv/bin/python benchmarks/seq2seq.py --gates

The task (num2words, offline): English number words → French (or ``--language de``) number words for random
numbers 0–999,999: a reordering translation ("two hundred and forty-one thousand" → "deux cent
quarante et un mille"). A "transformer base-small" (2+2 layers, model size 128, 4 heads, feed-forward 512)
trains for a fixed number of updates with the same batch size (64 pairs per update over 2 workers), Adam,
learning rate, clipping and seed on both sides:

- ours: ``spark_ml.Seq2Seq(numWorkers=2)`` on channels written beforehand (the timed part is the training
  job: the barrier stage, workers reading their shards, DDP training, the final evaluation, the artifact);
- peer: ``TorchDistributor(num_processes=2, local_mode=True)`` running a plain DDP loop over the same
  network class (``algorithms.networks.seq2seq``): random batches padded to their longest pair, teacher forcing,
  cross-entropy; rank 0 returns the weights.

Training tokens/s = target tokens (with ``</s>``) of all updates / wall time; BLEU (sacrebleu, 0–100) of the
held-out pairs decoded greedily by the same code. Then translation: our ``transform`` (beam 5, local[2])
sentences/s vs one process decoding the same sentences greedily in batches of 64. Targets (issue 16): ≥ 1.2×
TorchDistributor's tokens/s at equal BLEU (±1); transform ≥ 0.8× the greedy loop.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

import numpy as np  # noqa: E402

MODEL = {"encoderType": "transformer", "decoderType": "transformer", "numLayersEncoder": 2, "numLayersDecoder": 2,
         "transformerModelSize": 128, "transformerAttentionHeads": 4, "transformerFeedForwardNumHidden": 512,
         "numEmbedSource": 128, "numEmbedTarget": 128, "maxSeqLenSource": 24, "maxSeqLenTarget": 24,
         "batchSize": 64, "learningRate": 0.001, "clipGradient": 1.0, "beamSize": 5}


def number_pairs(count: int, language: str, seed: int) -> list[tuple[str, str]]:
    from num2words import num2words

    rng = np.random.default_rng(seed)
    numbers = rng.integers(0, 1_000_000, count)
    return [(num2words(int(n), lang="en"), num2words(int(n), lang=language)) for n in numbers]


def peer_train(args):
    """A plain PyTorch DDP script (what a user writes for TorchDistributor): same network, same loss."""
    import io

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from algorithms.builtin.seq2seq.data import make_batch
    from algorithms.networks.seq2seq import Seq2SeqNetwork

    config, sources, targets, updates, batch, lr, clip, out = args
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = DistributedDataParallel(Seq2SeqNetwork(config))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(rank)
    mine = np.arange(rank, len(sources), world)
    per_worker = batch // world
    for _ in range(updates):
        rows = rng.choice(mine, per_worker, replace=False)
        b = make_batch([sources[r] for r in rows], [targets[r] for r in rows], config.max_seq_len_source,
                       config.max_seq_len_target, 2, 3)
        logits = model(torch.from_numpy(b.src), torch.from_numpy(b.src_len), torch.from_numpy(b.tgt_in))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 torch.from_numpy(b.tgt_out).reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), clip)
        opt.step()
    if rank == 0:
        buf = io.BytesIO()
        torch.save(model.module.state_dict(), buf)
        with open(out, "wb") as f:
            f.write(buf.getvalue())
    dist.destroy_process_group()
    return rank


def greedy_loop(model, sources: list[np.ndarray], batch: int = 64) -> float:
    """Sentences/s of one process decoding greedily in batches (the translation peer)."""
    import torch

    from algorithms.builtin.seq2seq.data import pad, source_ids

    network, eos = model.network(), model.target_vocab.eos
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(sources), batch):
            ids = [source_ids(s, model.config.max_seq_len_source, model.source_vocab.eos) for s in sources[i:i + batch]]
            src, lengths = torch.from_numpy(pad(ids)), torch.tensor([len(x) for x in ids])
            state = network.start(network.encode(src, lengths))
            prev = torch.full((len(ids),), model.target_vocab.bos)
            done = torch.zeros(len(ids), dtype=torch.bool)
            for t in range(model.config.max_seq_len_target + 1):
                logits, _, state = network.step(prev, state, t)
                prev = logits.argmax(-1)
                done |= prev == eos
                if bool(done.all()):
                    break
    return len(sources) / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=200_000)
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--language", default="fr")
    p.add_argument("--sentences", type=int, default=2000, help="held-out sentences translated")
    p.add_argument("--gates", action="store_true", help="run Sockeye's full-size gates instead")
    args = p.parse_args()
    if args.gates:
        return gates()
    import torch
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    import spark_ml
    from algorithms.builtin.seq2seq.metrics import corpus_bleu
    from algorithms.builtin.seq2seq.model import Seq2SeqModel as Inner

    print(f"load average before: {os.getloadavg()}")
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "4g").config("spark.sql.shuffle.partitions", "4").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    pairs = number_pairs(args.pairs, args.language, 1)
    held_out = number_pairs(args.sentences, args.language, 2)
    print(f"{len(pairs)} pairs, e.g. {pairs[0]}")
    store = tempfile.mkdtemp(prefix="s2s-bench-")
    estimator = spark_ml.Seq2Seq(**MODEL, numWorkers=2, maxNumBatches=args.updates,
                                 checkpointFrequencyNumBatches=args.updates, modelStore=store, showProgress=False)
    df = spark.createDataFrame(pairs, ["source", "target"]).repartition(4).cache()
    df.count()
    validation = spark.createDataFrame(held_out[:500], ["source", "target"])
    channels, _ = estimator._channels(spark, {"train": df, "validation": validation})

    started = time.perf_counter()
    model = estimator.fit(channels)
    ours_seconds = time.perf_counter() - started
    inner = model.algorithm_model
    mean_target = float(np.mean([len(t.split()) + 1 for _, t in pairs]))
    tokens = args.updates * MODEL["batchSize"] * mean_target

    sources = [inner.source_vocab.encode(s.split()) for s, _ in pairs]
    targets = [inner.target_vocab.encode(t.split()) for _, t in pairs]
    out = os.path.join(store, "peer.pt")
    started = time.perf_counter()
    TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run(
        peer_train, (inner.config, sources, targets, args.updates, MODEL["batchSize"], MODEL["learningRate"],
                     MODEL["clipGradient"], out))
    peer_seconds = time.perf_counter() - started
    weights = torch.load(out, weights_only=True)
    peer = Inner(inner.hyperparameters, inner.config, weights, inner.source_vocab, inner.target_vocab)

    refs = [t for _, t in held_out]
    ours_bleu = 100 * corpus_bleu([t for t, _ in inner.translate([s for s, _ in held_out], beam_size=1)], refs)
    peer_bleu = 100 * corpus_bleu([t for t, _ in peer.translate([s for s, _ in held_out], beam_size=1)], refs)
    print(f"training {args.updates} updates x {MODEL['batchSize']} pairs ({tokens:.0f} target tokens):")
    print(f"  ours (spark_ml.Seq2Seq, 2 workers): {ours_seconds:7.1f} s  {tokens / ours_seconds:9.0f} tokens/s  "
          f"BLEU {ours_bleu:.2f}")
    print(f"  TorchDistributor(num_processes=2): {peer_seconds:7.1f} s  {tokens / peer_seconds:9.0f} tokens/s  "
          f"BLEU {peer_bleu:.2f}")
    print(f"  ratio (ours / TorchDistributor tokens/s): {peer_seconds / ours_seconds:.2f}x  "
          f"(target >= 1.2x at BLEU within 1: {abs(ours_bleu - peer_bleu):.2f} apart)")

    test = spark.createDataFrame([(s,) for s, _ in held_out], ["source"]).repartition(2).cache()
    test.count()
    started = time.perf_counter()
    translated = model.transform(test).select("translation").collect()
    ours_rate = len(translated) / (time.perf_counter() - started)
    greedy_rate = greedy_loop(inner, [inner.source_vocab.encode(s.split()) for s, _ in held_out])
    print(f"translation of {len(held_out)} sentences:")
    print(f"  ours (transform, beam 5, 2 executors): {ours_rate:8.1f} sentences/s")
    print(f"  one process, batched greedy (beam 1):  {greedy_rate:8.1f} sentences/s")
    print(f"  ratio: {ours_rate / greedy_rate:.2f}x (target >= 0.8x)")
    print(f"load average after: {os.getloadavg()}")


def gates() -> None:
    """Sockeye's system-test gates at full size (the unit tests run smaller versions of some)."""
    import torch
    from pyspark.sql import SparkSession

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from _seq2seq_support import (
        DEV_LINES,
        TEST_EMPTY,
        TEST_LINES,
        TRAIN_EMPTY,
        TRAIN_LINES,
        TRANSFORMER,
        digit_pairs,
        make_env,
        write_channels,
    )

    import spark_ml
    from algorithms.builtin.seq2seq import Seq2Seq
    from algorithms.builtin.seq2seq.metrics import corpus_bleu
    from algorithms.hyperparameters import camel_case

    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}")

    def bleu(translate, sort):
        test = digit_pairs(TEST_LINES, 42, sort, TEST_EMPTY)
        return corpus_bleu(translate([s for s, _ in test]), [t for _, t in test])

    cases = [("sort, transformer (ppl <= 1.03, BLEU >= 0.97)", True,
              {**TRANSFORMER, "transformer_attention_heads": 2, "max_num_batches": 600}),
             ("copy, RNN: LSTM + mlp attention (BLEU >= 0.95)", False,
              {**{k: v for k, v in TRANSFORMER.items() if not k.startswith(("transformer", "encoder", "decoder",
                                                                              "num_layers"))},
               "rnn_num_hidden": 64, "learning_rate": 0.005, "max_num_batches": 400})]
    for name, sort, hp in cases:
        folder = tempfile.mkdtemp()
        files = write_channels(__import__("pathlib").Path(folder),
                               digit_pairs(TRAIN_LINES, 13, sort, TRAIN_EMPTY), digit_pairs(DEV_LINES, 17, sort))
        env = make_env(files, hp, os.path.join(folder, "model"))
        started = time.perf_counter()
        model = Seq2Seq(env).train()
        print(f"{name}: best validation perplexity {min(env.reporter.values('validation:perplexity')):.4f}, "
              f"test BLEU {bleu(lambda s, m=model: [t for t, _ in m.translate(s)], sort):.4f} "
              f"({time.perf_counter() - started:.0f} s)")
    spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.createDataFrame(digit_pairs(TRAIN_LINES, 13, False, TRAIN_EMPTY), ["source", "target"])
    dev = spark.createDataFrame(digit_pairs(DEV_LINES, 17, False), ["source", "target"])
    params = {camel_case(k): v for k, v in TRANSFORMER.items()}
    started = time.perf_counter()
    model = spark_ml.Seq2Seq(**params, numWorkers=2, showProgress=False, modelStore=tempfile.mkdtemp()).fit(
        {"train": df, "validation": dev})
    print(f"copy, transformer, 2 workers (ppl <= 1.02, BLEU >= 0.98): validation perplexity "
          f"{model.metrics['validation:perplexity']:.4f}, test BLEU "
          f"{bleu(lambda s: [t for t, _ in model.translate(s)], False):.4f} ({time.perf_counter() - started:.0f} s)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

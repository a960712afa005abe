"""Seq2Seq from Spark: fit on a DataFrame of sentence pairs across two barrier tasks (DDP), SageMaker's three
channels as they are, transform in the executors, and a real model-server process answering all three content
types exactly as transform translates."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import orjson
import pytest
import requests

torch = pytest.importorskip("torch")
pytest.importorskip("sacrebleu")

sys.path.insert(0, os.path.dirname(__file__))
from _seq2seq_support import digit_pairs  # noqa: E402
from serving_support import wait_for  # noqa: E402

import spark_ml  # noqa: E402
from algorithms.builtin.seq2seq import records  # noqa: E402
from algorithms.builtin.seq2seq.metrics import corpus_bleu  # noqa: E402
from algorithms.channel import Channel  # noqa: E402
from spark_ml.arrow_vectors import ColumnError  # noqa: E402
from spark_ml.estimators.params import ParamError  # noqa: E402

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "golden" / "seq2seq"
CNN = {"encoderType": "cnn", "decoderType": "cnn", "cnnNumHidden": 64, "numLayersEncoder": 2, "numLayersDecoder": 2,
       "numEmbedSource": 32, "numEmbedTarget": 32, "maxSeqLenSource": 10, "maxSeqLenTarget": 10, "batchSize": 64,
       "learningRate": 0.003, "checkpointFrequencyNumBatches": 50, "beamSize": 2, "showProgress": False}


@pytest.fixture(scope="module")
def fitted(spark, tmp_path_factory):
    pairs = digit_pairs(3000, 13)
    df = spark.createDataFrame(pairs + [(None, "1"), ("", "2")], ["source", "target"]).repartition(3)
    model = spark_ml.Seq2Seq(**CNN, maxNumBatches=150, numWorkers=2, validationFraction=0.05, seed=1,
                             modelStore=str(tmp_path_factory.mktemp("store"))).fit(df)
    return model


def test_fit_on_sentence_pairs_trains_across_two_workers_and_transform_translates(spark, fitted):
    test = digit_pairs(110, 42, empty=10)
    df = spark.createDataFrame(test, ["source", "expected"])
    rows = fitted.setAttentionCol("attention").transform(df).collect()
    assert [r.source for r in rows] == [s for s, _ in test]
    assert corpus_bleu([r.translation for r in rows], [t for _, t in test]) >= 0.9
    assert fitted.metrics["validation:perplexity"] < 1.1
    assert fitted.sourceVocabulary[:4] == ["<pad>", "<unk>", "<s>", "</s>"] and len(fitted.sourceVocabulary) == 14
    row = next(r for r in rows if r.source)
    assert len(row.attention) == len(row.translation.split()) and len(row.attention[0]) == len(row.source.split())
    nulls = spark.createDataFrame([(None,)], "source string")
    assert fitted.transform(nulls).first().translation is None


def test_the_endpoints_content_types_answer_exactly_as_transform(spark, fitted, tmp_path):
    sentences = ["1 2 3", "9 8 7 6 5", "4 x 4", " ".join(["5"] * 20), ""]
    df = spark.createDataFrame([(s,) for s in sentences], ["source"])
    rows = fitted.setAttentionCol("attention").transform(df).collect()
    expected = [r.translation for r in rows]
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "algorithms.serving", "--model",
                             fitted.getOrDefault(fitted.modelLocation), "--port", "0", "--ready-file", str(ready)],
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, what="the model server to start")
        assert proc.poll() is None, proc.stderr.read().decode()
        url = f"http://127.0.0.1:{json.loads(ready.read_text())['port']}/invocations"
        instances = [{"data": s, "configuration": {"attention_matrix": "true"}} for s in sentences]
        got = requests.post(url, data=orjson.dumps({"instances": instances}),
                            headers={"Content-Type": "application/json"}, timeout=60)
        assert got.status_code == 200 and got.headers["content-type"] == "application/json"
        predictions = got.json()["predictions"]
        assert [p["target"] for p in predictions] == expected
        for p, r in zip(predictions, rows, strict=True):
            np.testing.assert_allclose(np.array(p["matrix"], np.float32).reshape(len(r.attention), -1),
                                       np.array(r.attention, np.float32).reshape(len(r.attention), -1), atol=1e-5)
        lines = b"".join(orjson.dumps({"source": s}) + b"\n" for s in sentences)
        got = requests.post(url, data=lines, headers={"Content-Type": "application/jsonlines",
                                                      "Accept": "application/jsonlines"}, timeout=60)
        assert [orjson.loads(line)["target"] for line in got.content.splitlines()] == expected
        vocab = fitted.algorithm_model.source_vocab
        body = records.encode(source=[vocab.encode(s.split()) for s in sentences])
        got = requests.post(url, data=body, headers={"Content-Type": "application/x-recordio-protobuf"}, timeout=60)
        targets = records.decode(got.content, keys=("target",))["target"]
        assert [" ".join(fitted.algorithm_model.target_vocab.decode(t)) for t in targets] == expected
        bad = requests.post(url, data=b'{"instances": [{"data": 5}]}', headers={"Content-Type": "application/json"},
                            timeout=60)
        assert bad.status_code == 400 and "instances[0]" in bad.json()["error"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_sagemakers_three_channels_train_as_they_are(spark, tmp_path):
    channels = {"train": Channel.open(str(GOLDEN / "train")), "validation": Channel.open(str(GOLDEN / "validation")),
                "vocab": Channel.open(str(GOLDEN / "vocab"))}
    model = spark_ml.Seq2Seq(**CNN, maxNumBatches=20, modelStore=str(tmp_path)).fit(channels)
    expected = json.loads((GOLDEN / "vocab" / "vocab.trg.json").read_text())
    assert model.targetVocabulary == sorted(expected, key=expected.get)
    assert "validation:perplexity" in model.metrics


def test_persistence_keeps_the_translation_params(fitted, tmp_path):
    path = str(tmp_path / "s2s")
    fitted.setTranslationCol("fr").write().overwrite().save(path)
    loaded = spark_ml.Seq2SeqModel.load(path)
    assert loaded.getTranslationCol() == "fr"
    assert loaded.translate(["1 2 3"]) == fitted.translate(["1 2 3"])


def test_bad_columns_and_params_fail_before_training(spark):
    df = spark.createDataFrame([("1 2", "1 2")], ["src", "tgt"])
    with pytest.raises(ColumnError, match="sourceCol 'source' is not a column"):
        spark_ml.Seq2Seq().fit(df)
    numbers = spark.createDataFrame([(1, "1")], ["source", "target"])
    with pytest.raises(ColumnError, match="sourceCol 'source' must hold strings"):
        spark_ml.Seq2Seq().fit(numbers)
    with pytest.raises(ParamError, match="rnnNumHidden \\(rnn_num_hidden\\): must be even"):
        spark_ml.Seq2Seq(rnnNumHidden=33).fit(df)
    with pytest.raises(ParamError, match="Param tokenizer: '/nowhere/sp.model' is neither 'whitespace'"):
        spark_ml.Seq2Seq(sourceCol="src", targetCol="tgt", tokenizer="/nowhere/sp.model").fit(df)


def test_a_sentencepiece_tokenizer_travels_in_the_vocab_channel(spark, tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    from algorithms.builtin.seq2seq.tokenize import Tokenizer
    from algorithms.builtin.seq2seq.vocab import Vocabulary
    from spark_ml.seq2seq_channels import count_tokens, write_pairs, write_vocab

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(["one two three", "four five six", "seven eight nine ten"] * 50))
    sentencepiece.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "sp"), vocab_size=20,
                                             model_type="unigram", minloglevel=2)
    tokenizer = Tokenizer((tmp_path / "sp.model").read_bytes())
    df = spark.createDataFrame([("one two three", "four five six")] * 4, ["source", "target"])
    counts = count_tokens(df, "source", tokenizer)
    assert sum(counts.values()) == 4 * len(tokenizer.split("one two three"))
    vocab = Vocabulary.build(counts)
    channel = write_pairs(df, str(tmp_path / "train"), "source", "target", vocab, vocab, tokenizer, 2)
    assert channel.num_records == 4
    written = write_vocab(str(tmp_path / "vocab"), vocab, vocab, tokenizer)
    assert sorted(s.path for s in written.shards()) == ["sentencepiece.model", "vocab.src.json", "vocab.trg.json"]
    assert tokenizer.join(tokenizer.split("seven eight nine")) == "seven eight nine"

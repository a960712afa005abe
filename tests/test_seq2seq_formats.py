"""Seq2Seq's formats: vocabularies, int32 source/target records (byte-exact with the protobuf runtime and read
from the real SDK's files), SageMaker's channels training unchanged, and the serving codec's three content
types over the HTTP app and the shared-memory handoff."""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
from collections import Counter

import numpy as np
import orjson
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sacrebleu")

sys.path.insert(0, os.path.dirname(__file__))
from _seq2seq_support import make_env, threads  # noqa: E402

from algorithms.builtin.seq2seq import Seq2Seq, records  # noqa: E402
from algorithms.builtin.seq2seq.metrics import corpus_bleu  # noqa: E402
from algorithms.builtin.seq2seq.vocab import Vocabulary  # noqa: E402
from algorithms.proto import Record  # noqa: E402
from algorithms.recordio import RecordIOError, frame  # noqa: E402
from algorithms.serving.app import InferenceApp  # noqa: E402
from algorithms.serving.content import request_media_type  # noqa: E402
from algorithms.serving.errors import RequestError  # noqa: E402

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "golden" / "seq2seq"


def golden_files() -> dict[str, list[str]]:
    return {"train": [str(GOLDEN / "train" / "train.rec")], "validation": [str(GOLDEN / "validation" / "val.rec")],
            "vocab": [str(GOLDEN / "vocab" / "vocab.src.json"), str(GOLDEN / "vocab" / "vocab.trg.json")]}


# ------------------------------------------------------------------------------------------------ vocabularies


def test_vocabularies_are_built_as_sagemakers_example_builds_them():
    pairs = json.loads((GOLDEN / "pairs.json").read_text())
    counts = Counter(t for s, _ in pairs["train"] for t in s.split())
    built = Vocabulary.build(counts)
    assert json.loads(built.to_json()) == json.loads((GOLDEN / "vocab" / "vocab.src.json").read_text())
    capped = Vocabulary.build({"b": 2, "a": 2, "c": 5, "d": 1}, max_words=2, min_count=2)
    assert capped.tokens == ["<pad>", "<unk>", "<s>", "</s>", "c", "b"]  # count desc, ties reverse lexical
    assert capped.encode(["c", "zzz"]).tolist() == [4, 1] and capped.decode([4, 5, 3, 4]) == ["c", "b"]


def test_a_vocabulary_file_must_have_pad_zero_and_the_special_symbols():
    with pytest.raises(ValueError, match="vocab.src.json: <pad> must have id 0"):
        Vocabulary.from_json('{"<pad>": 1, "<unk>": 0, "<s>": 2, "</s>": 3}', "vocab.src.json")
    with pytest.raises(ValueError, match="the special symbol\\(s\\) </s> are missing"):
        Vocabulary.from_json('{"<pad>": 0, "<unk>": 1, "<s>": 2}')
    with pytest.raises(ValueError, match="ids must be 0..4, each used once"):
        Vocabulary.from_json('{"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "a": 7}')
    with pytest.raises(ValueError, match="is not JSON"):
        Vocabulary.from_json("{")


# ----------------------------------------------------------------------------------------------------- records


def test_records_are_the_bytes_the_protobuf_runtime_writes():
    rng = np.random.default_rng(0)
    sources = [rng.integers(0, 70000, rng.integers(0, 12)) for _ in range(50)]
    targets = [rng.integers(0, 300, rng.integers(1, 12)) for _ in range(50)]
    expected = b""
    for s, t in zip(sources, targets, strict=True):
        record = Record()
        record.features["source"].int32_tensor.values.extend(s.tolist())
        record.features["target"].int32_tensor.values.extend(t.tolist())
        expected += frame(record.SerializeToString(deterministic=True))  # map keys in order: source, target
    assert records.encode(source=sources, target=targets) == expected
    decoded = records.decode(expected)
    for a, b in zip(decoded["source"], sources, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_real_sdks_records_read_back_as_the_sentences_they_hold():
    pairs = json.loads((GOLDEN / "pairs.json").read_text())
    vocab = Vocabulary.from_json((GOLDEN / "vocab" / "vocab.src.json").read_text())
    data = (GOLDEN / "train" / "train.rec").read_bytes()
    decoded = records.decode(data, source="train.rec")
    kept = [(s, t) for s, t in pairs["train"] if s and t]  # the example preprocessing skips empty lines
    assert len(decoded["source"]) == len(kept) == 1980
    assert [" ".join(vocab.decode(ids)) for ids in decoded["source"]] == [s for s, _ in kept]
    assert [" ".join(vocab.decode(ids)) for ids in decoded["target"]] == [t for _, t in kept]
    ours = records.encode(source=[vocab.encode(s.split()) for s, _ in kept],
                          target=[vocab.encode(t.split()) for _, t in kept])
    assert len(ours) == len(data)  # the same records; the SDK's protobuf may order the two map entries either way
    mine, theirs = records.decode(ours), decoded
    assert all(np.array_equal(a, b) for k in ("source", "target") for a, b in zip(mine[k], theirs[k], strict=True))


def test_bad_records_are_named_by_index_and_byte_offset():
    good = records.encode(source=[[4, 5]], target=[[4]])
    floats = Record()
    floats.features["source"].float32_tensor.values.extend([1.0])
    floats.features["target"].int32_tensor.values.extend([4])
    with pytest.raises(ValueError, match=rf"x.rec: record 1 \(byte offset {len(good)}\): features\['source'\] "
                                         "holds float32_tensor"):
        records.decode(good + frame(floats.SerializeToString()), source="x.rec")
    only_source = records.encode(source=[[4]])
    with pytest.raises(ValueError, match=r"record 0 \(byte offset 0\) has no features\['target'\]"):
        records.decode(only_source)
    with pytest.raises(RecordIOError, match=f"byte offset {len(good)}"):
        records.decode(good + frame(b"\xff\xff\xff"))


# ------------------------------------------------------------------------------- SageMaker's channels, unchanged


@pytest.fixture(scope="module")
def golden_model(tmp_path_factory):
    """Trained on the channels the real SDK wrote, as they are."""
    threads()
    hp = {"encoder_type": "cnn", "decoder_type": "cnn", "cnn_num_hidden": 64, "num_layers_encoder": 2,
          "num_layers_decoder": 2, "num_embed_source": 32, "num_embed_target": 32, "max_seq_len_source": 10,
          "max_seq_len_target": 10, "batch_size": 32, "learning_rate": 0.003, "checkpoint_frequency_num_batches": 100,
          "max_num_batches": 200, "beam_size": 2}
    env = make_env(golden_files(), hp, str(tmp_path_factory.mktemp("golden") / "model"))
    return Seq2Seq(env).train(), env.reporter


def test_a_channel_written_by_the_real_sdk_trains_unchanged(golden_model):
    model, reporter = golden_model
    pairs = json.loads((GOLDEN / "pairs.json").read_text())["validation"]
    hypotheses = [text for text, _ in model.translate([s for s, _ in pairs])]
    assert corpus_bleu(hypotheses, [t for _, t in pairs]) >= 0.9
    assert reporter.values("validation:perplexity")[-1] < 1.2


def test_predict_on_padded_id_rows_is_translation(golden_model):
    from algorithms.batch import Batch
    from algorithms.builtin.seq2seq.data import pad

    model = golden_model[0]
    sources = [model.source_vocab.encode(s.split()) for s in ("1 2 3", "9", "4 4 4 4")]
    out = model.predict(Batch(pad(sources)))["target"]
    expected = [t.tokens for t in model.translate_ids(sources)]
    assert out.dtype == np.int32 and out.shape == (3, max(len(t) for t in expected))
    assert [row[row != 0].tolist() for row in out] == expected


def test_a_vocab_channel_without_its_files_fails_clearly(tmp_path):
    files = golden_files()
    files["vocab"] = files["vocab"][:1]
    env = make_env(files, {}, str(tmp_path / "model"))
    with pytest.raises(ValueError, match="the vocab channel lacks vocab.trg.json"):
        Seq2Seq(env).train()


def test_token_ids_outside_the_vocabulary_fail_naming_the_file_and_record(tmp_path):
    bad = tmp_path / "bad.rec"
    bad.write_bytes(records.encode(source=[[4], [99]], target=[[4], [4]]))
    files = {**golden_files(), "train": [str(bad)]}
    with pytest.raises(ValueError, match=r"train channel file .*bad.rec: record 1 has source token id 99, "
                                         r"outside vocab.src.json \(0..13\)"):
        Seq2Seq(make_env(files, {}, str(tmp_path / "model"))).train()


# ----------------------------------------------------------------------------------------------------- serving


def answer(app: InferenceApp, body: bytes, ctype: str, accept: str | None = None) -> tuple[str, bytes]:
    media = request_media_type(ctype)
    chosen = app.negotiate(media, accept)
    return chosen, app.answer(body, media, chosen)


def test_the_three_content_types_answer_as_sagemaker_documents(golden_model):
    model, _ = golden_model
    app = InferenceApp(model)
    sentences = ["1 2 3 4", "9 9 8", "5 x 5", " ".join(["7"] * 30)]
    expected = [text for text, _ in model.translate(sentences)]
    instances = [{"data": s} for s in sentences]
    instances[2]["configuration"] = {"attention_matrix": "true"}
    body = orjson.dumps({"instances": instances})
    kind, got = answer(app, body, "application/json")
    doc = orjson.loads(got)
    assert kind == "application/json" and [p["target"] for p in doc["predictions"]] == expected
    assert [("matrix" in p) for p in doc["predictions"]] == [False, False, True, False]
    _, matrix = model.translate([sentences[2]], attention=True)[0]
    np.testing.assert_allclose(np.array(doc["predictions"][2]["matrix"], np.float32), matrix, rtol=1e-6)
    assert np.array(doc["predictions"][2]["matrix"]).shape == (len(expected[2].split()), 3)

    lines = b"".join(orjson.dumps({"source": s}) + b"\n" for s in sentences)
    kind, got = answer(app, lines, "application/jsonlines", "application/jsonlines")
    assert kind == "application/jsonlines"
    assert [orjson.loads(line)["target"] for line in got.splitlines()] == expected

    ids = [model.source_vocab.encode(s.split()) for s in sentences]
    kind, got = answer(app, records.encode(source=ids), "application/x-recordio-protobuf")
    targets = records.decode(got, keys=("target",))["target"]
    assert kind == "application/x-recordio-protobuf"
    assert [" ".join(model.target_vocab.decode(t)) for t in targets] == expected
    metadata = json.loads(app.metadata)
    assert metadata["request_content_types"] == ["application/json", "application/jsonlines",
                                                 "application/x-recordio-protobuf"]


def test_malformed_requests_answer_400_naming_the_fault(golden_model):
    app = InferenceApp(golden_model[0])
    cases = [(b"{", "application/json", "the body is not valid JSON"),
             (b'{"instances": [{"source": "1"}]}', "application/json", 'instances[0] must be an object with "data"'),
             (b'{"instances": [{"data": "1", "configuration": {"attention_matrix": "yes"}}]}', "application/json",
              'instances[0]: configuration.attention_matrix must be "true" or "false"'),
             (b'{"source": "1"}\n[1]\n', "application/jsonlines", 'JSON Lines line 2 must be {"source"'),
             (records.encode(source=[[4], [400]]), "application/x-recordio-protobuf",
              "record 1 has source token id 400, outside the source vocabulary"),
             (b"\x00\x01", "application/x-recordio-protobuf", "byte offset 0")]
    for body, ctype, message in cases:
        with pytest.raises(RequestError, match=re.escape(message)) as info:
            answer(app, body, ctype)
        assert info.value.status == 400, message
    with pytest.raises(RequestError, match="Seq2Seq answers in the request's content type") as info:
        answer(app, b'{"source": "1"}', "application/jsonlines", "application/json")
    assert info.value.status == 406
    with pytest.raises(RequestError, match="Seq2Seq reads") as info:
        answer(app, b"1,2", "text/csv")
    assert info.value.status == 415


def test_the_handoff_path_answers_like_http(golden_model):
    from test_handoff import Loop, hand_over

    from algorithms.serving import handoff as instance_side
    from spark_ml.endpoints.handoff import HandoffChannel, SlotArena

    if not instance_side.AVAILABLE:
        pytest.skip("memfd and SCM_RIGHTS are Linux features")
    loop = Loop(golden_model[0])
    try:
        arena = SlotArena(64 * 1024)
        channel = HandoffChannel(loop.name, arena)
        model = golden_model[0]
        ids = [model.source_vocab.encode(s.split()) for s in ("1 2 3", "4 4")]
        cases = [(orjson.dumps({"instances": [{"data": "1 2 3", "configuration": {"attention_matrix": True}}]}),
                  "application/json", None),
                 (b'{"source": "1 2 3"}\n{"source": "9"}\n', "application/jsonlines", "application/jsonlines"),
                 (records.encode(source=ids), "application/x-recordio-protobuf", None)]
        for body, ctype, accept in cases:
            status, kind, got = hand_over(loop, channel, arena, body, ctype, accept)
            assert status == 200 and kind == ctype.encode()
            assert got == answer(loop.app, body, ctype, accept)[1]
        status, _, got = hand_over(loop, channel, arena, b"{", "application/json", None)
        assert status == 400 and b"not valid JSON" in got
        loop.call(channel.close)
    finally:
        loop.close()

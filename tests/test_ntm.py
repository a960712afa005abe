"""NTM: topics of a synthetic corpus, per-epoch validation loss and early stopping, sparse batches, topic quality."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

torch = pytest.importorskip("torch")

from _kmeans_pca_support import write_channel  # noqa: E402
from _topics_support import lda_corpus, run, vocabulary_channel  # noqa: E402

from algorithms.batch import Batch  # noqa: E402
from algorithms.builtin import get, load_model  # noqa: E402
from algorithms.builtin.bag_of_words import WordCountError  # noqa: E402
from algorithms.builtin.lda import LDAModel  # noqa: E402
from algorithms.builtin.ntm import network as ntm_network  # noqa: E402
from algorithms.builtin.topic_words import Cooccurrence, coherence, topic_uniqueness  # noqa: E402
from algorithms.hyperparameters import HyperparameterError  # noqa: E402

K, V = 4, 120
HP = {"num_topics": str(K), "epochs": "12", "optimizer": "adam", "learning_rate": "0.01", "mini_batch_size": "64"}


@pytest.fixture(scope="module")
def corpus():
    return lda_corpus(1600, V, K, alpha=0.3, length=50, seed=7, concentration=0.03)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    counts, _, _ = corpus
    root = tmp_path_factory.mktemp("ntm")
    train = write_channel(str(root / "train"), counts[:1200], parts=2, sparse=True)
    validation = write_channel(str(root / "validation"), counts[1200:1400], parts=1, sparse=True)
    test = write_channel(str(root / "test"), counts[1400:], parts=1, sparse=True)
    words = [f"word{i}" for i in range(V)]
    torch.set_num_threads(1)
    (result,), (reporter,), model = run("ntm", HP, train, str(root / "model"), validation=validation, test=test,
                                        auxiliary=vocabulary_channel(str(root / "aux"), words))
    return result, reporter, model, words, root


def test_learns_the_topics_of_a_synthetic_corpus(corpus, trained):
    """The topic weights track the mixtures the documents were drawn from, and the decoder explains held-out
    words far better than the corpus' word frequencies do (most of the way to the true model)."""
    counts, beta, theta = corpus
    _, _, model, _, _ = trained
    weights = model.topic_weights(counts[1400:])
    correlation = np.corrcoef(weights.T, theta[1400:].T)[:K, K:]
    rows, cols = linear_sum_assignment(-correlation)
    assert correlation[rows, cols].min() > 0.85, correlation[rows, cols]
    loglik, words = model.log_likelihood(counts[1400:])
    true_loglik, _ = LDAModel({}, V, np.full(K, 0.3), beta).log_likelihood(counts[1400:])
    unigram = np.asarray(counts[:1200].sum(axis=0)).ravel() + 1.0
    unigram_loglik = float(counts[1400:].multiply(np.log(unigram / unigram.sum())[None, :]).sum())
    assert (loglik - unigram_loglik) > 0.5 * (true_loglik - unigram_loglik)


def test_reports_validation_loss_each_epoch_and_test_loss(trained):
    result, reporter, model, _, _ = trained
    epochs = [e for n, _, e in reporter.metrics if n == "validation:total_loss"]
    assert epochs == list(range(len(epochs))) and len(epochs) >= 3
    losses = [v for n, v, _ in reporter.metrics if n == "validation:total_loss"]
    best = int(np.argmin(losses))
    assert losses[best] < losses[0]
    # stopped num_patience_epochs (3) evaluations after the best one, unless the epochs ran out first
    assert len(losses) == min(best + 1 + 3, 12)
    parts = {n: v for n, v, _ in reporter.metrics if n.startswith("validation:")}
    assert parts["validation:total_loss"] == pytest.approx(parts["validation:recon_loss"] +
                                                           parts["validation:kl_divergence"])
    assert {"test:total_loss", "test:perplexity", "train:total_loss"} <= set(result.metrics)


def test_topic_words_and_quality_in_the_job_record(trained):
    result, reporter, model, words, _ = trained
    assert {"topics:wetc", "topics:tu", "topics:npmi"} <= set(result.metrics)
    header = [line for line in reporter.logs if line.startswith("Topics from epoch:final (num_topics:4)")]
    assert len(header) == 1
    lines = [line for line in reporter.logs if line.startswith("[")]
    assert len(lines) == K and all(len(line.split("] ", 1)[1].split()) == 10 for line in lines)
    assert lines[0].split("] ", 1)[1].split() == model.top_words(10)[0]
    assert model.top_words(3)[0][0] in words
    assert load_model(str(trained[4] / "model")).vocabulary == words


def test_topic_weights_and_a_saved_model_answer_alike(corpus, trained, tmp_path):
    counts, _, _ = corpus
    _, _, model, _, _ = trained
    out = model.predict(Batch(counts[:20]))["topic_weights"]
    assert out.shape == (20, K) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    from algorithms.builtin import save_model

    save_model(model, str(tmp_path / "copy"))
    again = load_model(str(tmp_path / "copy"))
    np.testing.assert_allclose(again.predict(Batch(counts[:20].toarray()))["topic_weights"], out, rtol=1e-5)
    loglik, words = model.log_likelihood(counts[1400:])
    probs = model.word_distribution(counts[1400:])
    held = sp.csr_matrix(counts[1400:])
    rows = np.repeat(np.arange(held.shape[0]), np.diff(held.indptr))
    assert loglik == pytest.approx(float((held.data * np.log(probs[rows, held.indices])).sum()), rel=1e-4)
    assert words == held.sum()


def test_sparse_batches_give_what_dense_ones_give(monkeypatch):
    """Above DENSE_MAX_WORDS words a batch stays sparse; the network's answers are the same."""
    rng = np.random.default_rng(0)
    counts = sp.random(16, 300, density=0.05, format="csr", random_state=1, dtype=np.float32)
    counts.data = rng.integers(1, 5, size=counts.nnz).astype(np.float32)
    torch.manual_seed(0)
    net = ntm_network.TopicVAE(300, 5, [12, 8], "tanh", batch_norm=True).eval()
    dense = ntm_network.BagOfWords(counts)
    monkeypatch.setattr(ntm_network, "DENSE_MAX_WORDS", 100)
    sparse = ntm_network.BagOfWords(counts)
    assert sparse.sparse and not dense.sparse
    with torch.no_grad():
        for a, b in zip(net(dense, sample=False), net(sparse, sample=False), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(net.topic_weights(dense), net.topic_weights(sparse))


def test_early_stopping_follows_the_training_loss_without_validation(corpus, tmp_path):
    counts, _, _ = corpus
    train = write_channel(str(tmp_path / "train"), counts[:300], parts=1, sparse=True)
    hp = {**HP, "epochs": "30", "tolerance": "0.1", "num_patience_epochs": "1", "optimizer": "sgd",
          "learning_rate": "0.0001"}
    (result,), (reporter,), _ = run("ntm", hp, train, str(tmp_path / "m"))
    epochs = [e for n, _, e in reporter.metrics if n == "train:total_loss"]
    assert len(epochs) < 30  # a loss that barely moves (10 % asked for) stops after 1 epoch of patience
    assert any(line.startswith("early stopping: train:total_loss") for line in reporter.logs)


def test_bad_input_and_hyperparameters(tmp_path):
    counts = np.ones((4, 6), dtype=np.float32)
    counts[2, 1] = 1.5
    train = write_channel(str(tmp_path / "t"), counts, parts=1)
    with pytest.raises(WordCountError, match=r"part-00000.pbr record 2: word 1 has count 1.5"):
        run("ntm", {"num_topics": "2", "epochs": "1"}, train, str(tmp_path / "m"))
    ntm = get("ntm")
    assert ntm.validate({"num_topics": "5"})["optimizer"] == "adadelta"  # SageMaker's defaults
    assert ntm.validate({"num_topics": "5", "clip_gradient": "Infinity"})["clip_gradient"] == "Infinity"
    for bad, name in (({"clip_gradient": "0.0001"}, "clip_gradient"), ({"encoder_layers": "10,x"}, "encoder_layers"),
                      ({"sub_sample": "0"}, "sub_sample"), ({"rescale_gradient": "2"}, "rescale_gradient"),
                      ({"optimizer": "nag"}, "optimizer"), ({"num_topics": "1"}, "num_topics")):
        with pytest.raises(HyperparameterError, match=name):
            ntm.validate({"num_topics": "5", **bad})


def test_topic_uniqueness_and_coherence_on_known_examples():
    top = np.array([[0, 1, 2], [0, 3, 4]])
    np.testing.assert_allclose(topic_uniqueness(top), [(0.5 + 1 + 1) / 3, (0.5 + 1 + 1) / 3])
    # words 0 and 1 always together, 2 never with them: NPMI 1 for (0, 1), -1 for the others
    docs = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], np.float64))
    cooc = Cooccurrence(np.unique(top))
    cooc.update(docs)
    wetc, npmi = coherence(np.array([[0, 1], [0, 2]]), cooc)
    np.testing.assert_allclose(npmi, [1.0, -1.0])
    assert wetc[0] > wetc[1]


def test_serving_answers_in_sagemakers_shapes(corpus, trained):
    """The model server's encoders give NTM's documented JSON and JSON Lines responses."""
    import json

    from algorithms.serving.encoders import encode_response

    counts, _, _ = corpus
    _, _, model, _, _ = trained
    outputs = model.predict(Batch(counts[:3]))
    body = json.loads(encode_response(outputs, model.outputs, model.json_envelope, "application/json", 3))
    assert list(body) == ["predictions"] and [list(p) for p in body["predictions"]] == [["topic_weights"]] * 3
    np.testing.assert_allclose([p["topic_weights"] for p in body["predictions"]], outputs["topic_weights"], rtol=1e-6)
    lines = encode_response(outputs, model.outputs, model.json_envelope, "application/jsonlines", 3).decode()
    assert [list(json.loads(line)) for line in lines.splitlines()] == [["topic_weights"]] * 3

"""Spectral LDA: recovery of known topics, worker-count independence, inference against scikit-learn, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp
from _kmeans_pca_support import write_channel
from _topics_support import lda_corpus, matched_l1, run, vocabulary_channel
from sklearn.decomposition import LatentDirichletAllocation

from algorithms.batch import Batch
from algorithms.builtin import get, load_model
from algorithms.builtin.bag_of_words import WordCountError
from algorithms.builtin.lda import LDAModel
from algorithms.builtin.lda.tensor import orthogonal_als
from algorithms.hyperparameters import HyperparameterError

K, V, DOCS = 8, 400, 20000


@pytest.fixture(scope="module")
def corpus():
    return lda_corpus(DOCS, V, K, alpha=0.1, length=60)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    counts, beta, _ = corpus
    root = tmp_path_factory.mktemp("lda")
    channel = write_channel(str(root / "train"), counts, parts=4, sparse=True)
    one = run("lda", {"num_topics": str(K), "alpha0": "0.8"}, channel, str(root / "one"))
    two = run("lda", {"num_topics": str(K), "alpha0": "0.8"}, channel, str(root / "two"), workers=2)
    return channel, one, two


def test_recovers_the_topics_of_a_synthetic_corpus(corpus, trained):
    _, beta, _ = corpus
    _, (_, reporters, model), _ = trained
    errors = matched_l1(beta, model.topics)
    assert errors.max() <= 0.15, errors
    np.testing.assert_allclose(model.topics.sum(axis=1), 1.0)
    # α: the corpus' prior is 0.1 per topic (α0 = 0.8); the recovered ones are close, largest first
    assert np.all(np.diff(model.alpha) <= 0) and np.allclose(model.alpha, 0.1, rtol=0.25), model.alpha
    assert any("tensor decomposition: 10 components" in line for line in reporters[0].logs)  # 25 % extra


def test_one_and_two_workers_give_the_same_model(trained):
    _, (_, _, one), (results, _, two) = trained
    np.testing.assert_allclose(two.topics, one.topics, atol=1e-8)
    np.testing.assert_allclose(two.alpha, one.alpha, rtol=1e-8)
    assert results[0].metrics == results[1].metrics


def test_topic_mixtures_match_scikit_learns_variational_inference(corpus):
    """Given the same topics and prior, scikit-learn's batch E-step gives the same mixtures."""
    counts, beta, theta = corpus
    docs = counts[:500]
    model = LDAModel({}, V, np.full(K, 0.1), beta)
    sklearn = LatentDirichletAllocation(n_components=K, doc_topic_prior=0.1, max_doc_update_iter=200,
                                        mean_change_tol=1e-5)
    sklearn.components_ = beta * 1e8  # E[log β] = log β for a very concentrated variational Dirichlet
    sklearn.exp_dirichlet_component_ = beta
    sklearn.n_features_in_ = V
    sklearn.doc_topic_prior_ = 0.1
    sklearn.n_batch_iter_ = 1
    expected = sklearn.transform(docs)
    got = model.topic_mixture(docs)
    # both stop iterating once γ moves little (ours at a mean change of 1e-3): equal up to that
    np.testing.assert_allclose(got, expected, atol=1e-2)
    assert np.abs(got - expected).mean() < 1e-4
    # and the mixtures are those the corpus was drawn from, as far as 60 words tell
    assert np.abs(got - theta[:500]).sum(axis=1).mean() < 0.35


def test_predict_and_the_test_channel_pwll(corpus, trained, tmp_path):
    counts, _, _ = corpus
    channel, _, _ = trained
    test = write_channel(str(tmp_path / "test"), counts[:300].toarray(), parts=1, sparse=False)
    (result, *_), _, model = run("lda", {"num_topics": str(K), "alpha0": "0.8"}, channel, str(tmp_path / "m"),
                                 test=test)
    loglik, words = model.log_likelihood(counts[:300])
    assert result.metrics["test:pwll"] == pytest.approx(loglik / words)
    # a model that knows the topics explains the words far better than the corpus' word frequencies do
    unigram = (np.asarray(counts.sum(axis=0)).ravel() + 1.0) / (counts.sum() + V)
    baseline = float(counts[:300].multiply(np.log(unigram)[None, :]).sum() / words)
    assert result.metrics["test:pwll"] > baseline + 0.5

    out = model.predict(Batch(counts[:5].toarray()))["topic_mixture"]
    assert out.shape == (5, K) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_torch_backend_trains_the_same_model(corpus, trained, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    channel, (_, _, numpy_model), _ = trained
    monkeypatch.setenv("SPARK_ML_ARRAY_BACKEND", "torch:cpu")
    _, _, model = run("lda", {"num_topics": str(K), "alpha0": "0.8"}, channel, str(tmp_path / "torch"))
    np.testing.assert_allclose(model.topics, numpy_model.topics, atol=1e-7)
    counts, _, _ = corpus
    np.testing.assert_allclose(model.topic_mixture(counts[:50]), numpy_model.topic_mixture(counts[:50]), atol=1e-8)


def test_empty_documents_are_skipped_and_counted_and_vocabulary_names_the_words(tmp_path):
    counts, _, _ = lda_corpus(3000, 50, 3, alpha=0.2, length=40, seed=3)
    with_empty = sp.vstack([counts[:1000], sp.csr_matrix((7, 50), dtype=np.float32), counts[1000:]]).tocsr()
    words = [f"w{i}" for i in range(50)]
    a = write_channel(str(tmp_path / "a"), counts, parts=1, sparse=True)
    b = write_channel(str(tmp_path / "b"), with_empty.toarray(), parts=2, sparse=False)
    (ra, *_), _, ma = run("lda", {"num_topics": "3"}, a, str(tmp_path / "ma"))
    (rb, *_), reporters, mb = run("lda", {"num_topics": "3"}, b, str(tmp_path / "mb"),
                                  auxiliary=vocabulary_channel(str(tmp_path / "aux"), words))
    assert ra.metrics["train:empty_documents"] == 0 and rb.metrics["train:empty_documents"] == 7
    assert "skipped 7 empty document(s) of the train channel (no words)" in reporters[0].logs
    np.testing.assert_allclose(mb.topics, ma.topics, atol=1e-8)
    ids, weights = mb.describe_topics(4)
    assert mb.top_words(4) == [[words[i] for i in row] for row in ids.tolist()]
    assert np.all(np.diff(weights, axis=1) <= 0)
    assert load_model(str(tmp_path / "mb")).vocabulary == words  # vocab.txt travels with the artifact
    assert mb.predict(Batch(np.zeros((1, 50))))["topic_mixture"][0] == \
        pytest.approx(mb.alpha / mb.alpha.sum(), rel=1e-5)  # no words: the prior's mean


def test_bad_counts_name_the_file_and_record(tmp_path):
    counts = np.ones((6, 5), dtype=np.float32) * 2
    counts[4, 3] = -1
    channel = write_channel(str(tmp_path / "neg"), counts, parts=2)
    with pytest.raises(WordCountError, match=r"train channel, part-00001.pbr record 1: word 3 has count -1; "
                                             r"topic models need non-negative integer word counts"):
        run("lda", {"num_topics": "2"}, channel, str(tmp_path / "m1"))
    counts[4, 3] = 0.5
    channel = write_channel(str(tmp_path / "frac"), sp.csr_matrix(counts), parts=1, sparse=True)
    with pytest.raises(WordCountError, match=r"part-00000.pbr record 4: word 3 has count 0.5"):
        run("lda", {"num_topics": "2"}, channel, str(tmp_path / "m2"))
    counts[4, 3] = 1
    channel = write_channel(str(tmp_path / "ok"), counts, parts=1)
    with pytest.raises(ValueError, match=r"vocab.txt: 4 words, but feature_dim is 5"):
        run("lda", {"num_topics": "2"}, channel, str(tmp_path / "m3"),
            auxiliary=vocabulary_channel(str(tmp_path / "aux"), ["a", "b", "c", "d"]))


def test_hyperparameters_are_checked_before_training():
    lda = get("lda")
    with pytest.raises(HyperparameterError, match="num_topics: must be at most feature_dim \\(5\\), got 6"):
        lda.validate({"num_topics": "6", "feature_dim": "5"})
    with pytest.raises(HyperparameterError, match="alpha0"):
        lda.validate({"num_topics": "2", "alpha0": "0"})
    assert lda.validate({"num_topics": "3"})["max_restarts"] == 10  # SageMaker's defaults
    assert lda.validate({"num_topics": "3"})["max_iterations"] == 1000
    assert lda.validate({"num_topics": "3"})["tol"] == 1e-8


def test_orthogonal_als_finds_a_known_decomposition():
    rng = np.random.default_rng(0)
    factors, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    weights = np.array([5.0, 4.0, 3.0, 2.5, 2.0, 1.0])
    tensor = np.einsum("r,ir,jr,kr->ijk", weights, factors, factors, factors)
    result = orthogonal_als(tensor, max_restarts=3, max_iterations=500, tol=1e-12, rng=rng)
    np.testing.assert_allclose(result.weights, weights, rtol=1e-8)
    np.testing.assert_allclose(np.abs(result.factors.T @ factors), np.eye(6), atol=1e-6)
    assert result.residual < 1e-6


def test_streams_in_bounded_blocks(tmp_path, monkeypatch):
    """The moments are sums over blocks: a smaller block gives the same model."""
    from algorithms.builtin.lda import algorithm

    counts, _, _ = lda_corpus(2000, 60, 3, alpha=0.2, length=30, seed=5)
    channel = write_channel(str(tmp_path / "c"), counts, parts=1, sparse=True)
    _, _, big = run("lda", {"num_topics": "3"}, channel, str(tmp_path / "big"))
    monkeypatch.setattr(algorithm, "BLOCK_ROWS", 97)
    _, _, small = run("lda", {"num_topics": "3"}, channel, str(tmp_path / "small"))
    np.testing.assert_allclose(small.topics, big.topics, atol=1e-9)
    assert os.path.exists(tmp_path / "small" / "manifest.json")

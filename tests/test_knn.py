"""k-NN against scikit-learn's brute-force neighbours on its bundled digits and diabetes data, through real
channels and the training contract (workers as threads); IVF recall against Flat; sign/fjlt reductions;
SageMaker's cross-checks, response shapes (verbose) and artifact files (faiss's own format, no pickle).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _kmeans_pca_support import train
from test_randomcutforest import labelled_channel
from test_serving_server import call

from algorithms.batch import Batch
from algorithms.builtin.knn import KNNModel, majority_vote
from algorithms.builtin.knn.reduction import Reduction
from algorithms.hyperparameters import HyperparameterError
from algorithms.serving.app import InferenceApp

faiss = pytest.importorskip("faiss", reason="faiss-cpu (the knn extra) is not installed")

K = 5


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.data))
    train_rows, test_rows = order[:1400], order[1400:]
    x, y = data.data.astype(np.float32), data.target.astype(np.float32)
    return x[train_rows], y[train_rows], x[test_rows], y[test_rows]


@pytest.fixture(scope="module")
def digits_channel(digits, tmp_path_factory):
    x, y, _, _ = digits
    return labelled_channel(tmp_path_factory.mktemp("digits") / "train", x, y)


@pytest.fixture(scope="module")
def flat_classifier(digits_channel, tmp_path_factory):
    _, model = train("knn", {"k": str(K), "predictor_type": "classifier", "sample_size": "5000"}, digits_channel,
                     str(tmp_path_factory.mktemp("flat")))
    return model


def untied(train_x: np.ndarray, queries: np.ndarray, k: int, tolerance: float = 0.0) -> np.ndarray:
    """Queries whose k-th and (k+1)-th nearest training rows are not at the same distance (float64; within a
    relative ``tolerance`` counts as the same), so that the k nearest are one set whatever breaks ties."""
    from sklearn.metrics import pairwise_distances

    d = np.sort(pairwise_distances(queries.astype(np.float64), train_x.astype(np.float64), metric="sqeuclidean"))
    return np.abs(d[:, k] - d[:, k - 1]) > tolerance * np.maximum(d[:, k - 1], 1e-12)


def test_flat_classifier_equals_scikit_learn_brute_force_on_digits(digits, flat_classifier):
    from sklearn.neighbors import KNeighborsClassifier

    x, y, queries, truth = digits
    reference = KNeighborsClassifier(n_neighbors=K, algorithm="brute").fit(x, y)
    ours = flat_classifier.configured(verbose=True).predict(Batch(queries))
    clear = untied(x, queries, K)
    assert clear.mean() > 0.8
    np.testing.assert_array_equal(ours["predicted_label"][clear], reference.predict(queries)[clear])
    distances, ids = reference.kneighbors(queries)
    np.testing.assert_allclose(ours["distances"][clear], distances[clear] ** 2, rtol=1e-5)  # squared L2, as faiss
    # the same neighbours; equally distant ones may come in another order
    np.testing.assert_array_equal(np.sort(ours["labels"][clear], axis=1), np.sort(y[ids][clear], axis=1))
    assert (ours["predicted_label"] == truth).mean() > 0.97
    assert flat_classifier.index_size == len(x)  # sample_size above the data: every record (clamped)


def test_flat_regressor_equals_scikit_learn_brute_force_on_diabetes(tmp_path):
    from sklearn.datasets import load_diabetes
    from sklearn.neighbors import KNeighborsRegressor

    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)  # channels hold float32; scikit-learn gets the very same values
    channel = labelled_channel(tmp_path / "train", x, y)
    results, model = train("knn", {"k": "10", "predictor_type": "regressor", "sample_size": "1000"}, channel,
                           str(tmp_path / "model"), workers=2, test_channel=channel)
    reference = KNeighborsRegressor(n_neighbors=10, algorithm="brute").fit(x.astype(np.float64), y)
    ours = model.predict(Batch(x))["predicted_label"]
    clear = untied(x, x, 10, tolerance=1e-4)  # faiss computes in float32: near-equal distances may swap
    assert clear.mean() > 0.9
    expected = reference.predict(x.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(ours[clear], expected[clear])
    mse = float(np.mean((ours.astype(np.float64) - y) ** 2))
    assert results[0].metrics["test:mse"] == pytest.approx(mse, rel=1e-6)


@pytest.mark.parametrize(("index_type", "least_recall"), [("faiss.IVFFlat", 0.95), ("faiss.IVFPQ", 0.9)])
def test_ivf_indexes_recall_the_flat_neighbours(digits, digits_channel, flat_classifier, tmp_path, index_type,
                                                least_recall):
    """recall@k: the share of the exact k nearest (Flat) that the IVF index returns. IVFPQ also quantizes the
    vectors (8-bit codes of 2-dimension pieces), so it recalls a little less."""
    _, _, queries, truth = digits
    _, model = train("knn", {"k": str(K), "predictor_type": "classifier", "sample_size": "5000",
                             "index_type": index_type}, digits_channel, str(tmp_path / "model"))
    _, exact = flat_classifier.neighbours(queries)
    _, found = model.neighbours(queries)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(exact, found, strict=True)])
    assert recall >= least_recall
    assert (model.predict(Batch(queries))["predicted_label"] == truth).mean() > 0.95


@pytest.mark.parametrize("reduction", ["sign", "fjlt"])
def test_sign_and_fjlt_reductions_keep_accuracy_within_2_percent(digits, digits_channel, flat_classifier, tmp_path,
                                                                 reduction):
    _, _, queries, truth = digits
    results, model = train("knn", {"k": str(K), "predictor_type": "classifier", "sample_size": "5000",
                                   "dimension_reduction_type": reduction, "dimension_reduction_target": "32"},
                           digits_channel, str(tmp_path / "model"), workers=2,
                           test_channel=labelled_channel(tmp_path / "test", queries, truth))
    full = (flat_classifier.predict(Batch(queries))["predicted_label"] == truth).mean()
    reduced = (model.predict(Batch(queries))["predicted_label"] == truth).mean()
    assert reduced >= full - 0.02
    assert results[0].metrics["test:accuracy"] == pytest.approx(reduced)
    assert model.index.d == 32
    files = sorted(os.listdir(tmp_path / "model"))
    assert files == ["index.faiss", "labels.npy", "manifest.json", "reduction.npz"]


def test_reductions_keep_norms_in_expectation_and_fjlt_is_a_hadamard_transform():
    from scipy.linalg import hadamard

    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 50))
    for kind in ("sign", "fjlt"):
        projected = Reduction.create(kind, 50, 40).apply(x).astype(np.float64)
        ratio = (projected**2).sum(axis=1) / (x**2).sum(axis=1)
        assert abs(ratio.mean() - 1) < 0.05, kind
    fjlt = Reduction.create("fjlt", 50, 40)
    padded = np.zeros((len(x), 64))
    padded[:, :50] = x
    dense = (padded * fjlt.signs) @ hadamard(64).T
    np.testing.assert_allclose(fjlt.apply(x), dense[:, fjlt.coordinates] / np.sqrt(40), rtol=1e-5, atol=1e-5)


def test_two_workers_index_a_sample_of_exactly_sample_size_records(digits, digits_channel, tmp_path):
    from collections import Counter

    x, y, _, _ = digits
    _, model = train("knn", {"k": str(K), "predictor_type": "classifier", "sample_size": "500"}, digits_channel,
                     str(tmp_path / "model"), workers=2)
    assert model.index_size == 500
    stored = model.index.reconstruct_n(0, 500)
    labels = {row.tobytes(): label for row, label in zip(x, y, strict=True)}
    assert all(labels[row.tobytes()] == label for row, label in zip(stored, model.labels, strict=True))
    available = Counter(row.tobytes() for row in x)
    taken = Counter(row.tobytes() for row in stored)
    assert all(count <= available[row] for row, count in taken.items())  # records, without replacement


def test_majority_vote_breaks_ties_towards_the_smallest_label():
    labels = np.array([[3, 1, 3, 1, 2], [7, 7, 7, 0, 0], [4, 5, 6, 7, 8], [2, 2, 1, 1, 1]], np.float32)
    np.testing.assert_array_equal(majority_vote(labels), [1, 7, 4, 1])


def test_inner_product_and_cosine_metrics_rank_by_similarity(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    channel = labelled_channel(tmp_path / "train", x, y)
    for metric in ("INNER_PRODUCT", "COSINE"):
        _, model = train("knn", {"k": "3", "predictor_type": "classifier", "sample_size": "300",
                                 "index_metric": metric}, channel, str(tmp_path / metric))
        out = model.configured(verbose=True).predict(Batch(x[:20]))
        vectors = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "COSINE" else x
        similarity = vectors[:20] @ vectors.T
        np.testing.assert_allclose(out["distances"], -np.sort(-similarity, axis=1)[:, :3], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------- serving


def test_endpoint_answers_with_sagemakers_shapes_and_verbose_on_request(digits, flat_classifier):
    _, _, queries, _ = digits
    app = InferenceApp(flat_classifier)
    body = json.dumps({"instances": [{"features": row.tolist()} for row in queries[:3]]}).encode()
    expected = flat_classifier.configured(verbose=True).predict(Batch(queries[:3]))
    status, _, answer = call(app, "POST", "/invocations", body, [("Content-Type", "application/json")])
    doc = json.loads(answer)
    assert status == 200 and all(list(p) == ["predicted_label"] for p in doc["predictions"])
    status, headers, answer = call(app, "POST", "/invocations", body, [
        ("Content-Type", "application/json"), ("Accept", "application/json; verbose=true")])
    predictions = json.loads(answer)["predictions"]
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert [list(p) for p in predictions] == [["predicted_label", "labels", "distances"]] * 3
    for name in ("predicted_label", "labels", "distances"):
        np.testing.assert_array_equal(np.float32([p[name] for p in predictions]), expected[name])
    status, _, answer = call(app, "POST", "/invocations", body, [
        ("Content-Type", "application/json"), ("Accept", "application/jsonlines;verbose=true")])
    assert status == 200 and list(json.loads(answer.splitlines()[0])) == ["predicted_label", "labels", "distances"]
    status, _, answer = call(app, "POST", "/invocations", b"1,2,3\n", [("Content-Type", "text/csv")])
    assert status == 400 and b"the model expects 64 values" in answer


def test_artifact_is_faiss_index_and_npy_labels_loadable_without_pickle(flat_classifier, tmp_path):
    from algorithms.builtin import load_model, save_model

    save_model(flat_classifier, str(tmp_path / "saved"))
    index = faiss.read_index(str(tmp_path / "saved" / "index.faiss"))
    assert index.ntotal == flat_classifier.index_size and index.d == 64
    labels = np.load(tmp_path / "saved" / "labels.npy", allow_pickle=False)
    np.testing.assert_array_equal(labels, flat_classifier.labels)
    loaded = load_model(str(tmp_path / "saved"))
    assert isinstance(loaded, KNNModel)
    x = index.reconstruct_n(0, 10)
    np.testing.assert_array_equal(loaded.predict(Batch(x))["predicted_label"],
                                  flat_classifier.predict(Batch(x))["predicted_label"])


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("hyperparameters", "message"), [
    ({"index_type": "faiss.IVFPQ", "index_metric": "COSINE"}, "index_metric: faiss.IVFPQ supports L2 only"),
    ({"index_type": "faiss.IVFPQ", "faiss_index_pq_m": "5"}, "faiss_index_pq_m: must be one of 1, 2, 3, 4, 8"),
    ({"dimension_reduction_type": "sign"}, "dimension_reduction_target: is required with"),
    ({"dimension_reduction_type": "fjlt", "dimension_reduction_target": "64"}, "must be below feature_dim"),
    ({"dimension_reduction_target": "8"}, "dimension_reduction_type is none"),
    ({"k": "600"}, r"k: must be at most sample_size \(500\)"),
    ({"predictor_type": "ranker"}, "predictor_type: must be one of classifier, regressor"),
])
def test_sagemakers_cross_checks_name_the_hyperparameter(digits_channel, tmp_path, hyperparameters, message):
    base = {"k": str(K), "predictor_type": "classifier", "sample_size": "500", "feature_dim": "64"}
    with pytest.raises(HyperparameterError, match=message):
        train("knn", {**base, **hyperparameters}, digits_channel, str(tmp_path / "model"))


def test_bad_data_fails_naming_the_problem(digits, tmp_path):
    x, y, _, _ = digits
    channel = labelled_channel(tmp_path / "train", x[:20], y[:20])
    base = {"k": "3", "predictor_type": "classifier", "sample_size": "10"}
    with pytest.raises(ValueError, match="feature_dim is 10 but the train channel holds 64 features"):
        train("knn", {**base, "feature_dim": "10"}, channel, str(tmp_path / "m1"))
    with pytest.raises(ValueError, match="k is 30 but the train channel holds only 20 records"):
        train("knn", {**base, "k": "30", "sample_size": "40"}, channel, str(tmp_path / "m2"))
    bad = x[:20].copy()
    bad[4, 9] = np.inf
    with pytest.raises(ValueError, match=r"non-finite feature value \(inf\) in record 4 .*\(feature 9\)"):
        train("knn", base, labelled_channel(tmp_path / "inf", bad, y[:20]), str(tmp_path / "m3"))


def test_accept_parameters_are_those_of_the_chosen_type():
    from algorithms.serving.content import accept_parameters, choose_response_type

    header = "text/csv;q=0.5, application/json; verbose=true; q=0.9"
    chosen = choose_response_type(header)
    assert chosen == "application/json" and accept_parameters(header, chosen) == {"verbose": "true"}
    assert accept_parameters("*/*", choose_response_type("*/*")) == {}
    assert accept_parameters(None, "application/json") == {}

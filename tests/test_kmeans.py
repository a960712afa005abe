"""K-Means against scikit-learn on its bundled real datasets, through real channels and the training contract.

Workers run as threads (``ThreadGroup``); no Spark.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
from _kmeans_pca_support import train, write_channel
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.metrics import pairwise_distances

from algorithms import builtin
from algorithms.backend import ENV as BACKEND_ENV
from algorithms.batch import Batch
from algorithms.builtin.kmeans.algorithm import KMeans, KMeansModel, num_centers
from algorithms.hyperparameters import HyperparameterError
from algorithms.training import ChannelInput, TrainingEnv


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data


@pytest.fixture(scope="module")
def digits_best_inertia(digits) -> float:
    return SkKMeans(n_clusters=10, n_init=10, random_state=0).fit(digits).inertia_


def inertia(x: np.ndarray, centers: np.ndarray) -> float:
    return float(pairwise_distances(x, centers, metric="sqeuclidean").min(axis=1).sum())


def test_digits_within_2_percent_of_sklearn_and_predictions_match(tmp_path, digits, digits_best_inertia):
    channel = write_channel(str(tmp_path / "train"), digits, parts=3)
    results, model = train("kmeans", {"k": "10", "feature_dim": "64"}, channel, str(tmp_path / "model"))
    assert isinstance(model, KMeansModel)
    centers = model.cluster_centers
    assert centers.shape == (10, 64)
    assert inertia(digits, centers) <= 1.02 * digits_best_inertia

    out = model.predict(Batch(digits.astype(np.float32)))
    assert set(out) == {"closest_cluster", "distance_to_cluster"}
    assert out["closest_cluster"].dtype == np.float32 and out["distance_to_cluster"].dtype == np.float32
    d2 = pairwise_distances(digits, centers, metric="sqeuclidean")
    np.testing.assert_array_equal(out["closest_cluster"], d2.argmin(axis=1).astype(np.float32))
    np.testing.assert_allclose(out["distance_to_cluster"], np.sqrt(d2.min(axis=1)), rtol=1e-5)

    # train:msd summarizes the stream: an upper bound of the exact msd, and close to it
    exact_msd = d2.min(axis=1).mean()
    assert exact_msd <= results[0].metrics["train:msd"] <= 1.05 * exact_msd
    with open(tmp_path / "model" / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["algorithm"] == "kmeans" and manifest["feature_dim"] == 64
    assert manifest["metrics"]["train:msd"] == pytest.approx(results[0].metrics["train:msd"])


@pytest.mark.parametrize("force_dense", ["True", "False"])
def test_sparse_records_and_two_workers_give_the_same_quality(tmp_path, digits, digits_best_inertia,
                                                              force_dense):
    dense = write_channel(str(tmp_path / "dense"), digits, parts=4)
    sparse = write_channel(str(tmp_path / "sparse"), digits, parts=4, sparse=True)
    hp = {"k": "10", "force_dense": force_dense}
    _, one_dense = train("kmeans", hp, dense, str(tmp_path / "m1d"))
    _, one_sparse = train("kmeans", hp, sparse, str(tmp_path / "m1s"))
    _, two_dense = train("kmeans", hp, dense, str(tmp_path / "m2d"), workers=2)
    _, two_sparse = train("kmeans", hp, sparse, str(tmp_path / "m2s"), workers=2)
    np.testing.assert_allclose(one_sparse.cluster_centers, one_dense.cluster_centers, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(two_sparse.cluster_centers, two_dense.cluster_centers, rtol=1e-9, atol=1e-9)
    for model in (one_dense, two_dense):
        assert inertia(digits, model.cluster_centers) <= 1.02 * digits_best_inertia
    # sparse rows predict like dense ones
    out_sparse = two_sparse.predict(Batch(sp.csr_matrix(digits)))
    out_dense = two_sparse.predict(Batch(digits))
    np.testing.assert_array_equal(out_sparse["closest_cluster"], out_dense["closest_cluster"])
    np.testing.assert_allclose(out_sparse["distance_to_cluster"], out_dense["distance_to_cluster"], rtol=1e-4)


@pytest.mark.parametrize(("loader", "k", "hp", "workers"), [
    (load_breast_cancer, 5, {}, 1),
    (load_breast_cancer, 5, {"init_method": "kmeans++"}, 2),
    (load_wine, 3, {"init_method": "kmeans++", "epochs": "2", "mini_batch_size": "50"}, 2),
    (load_wine, 3, {"local_lloyd_init_method": "random", "local_lloyd_num_trials": "20"}, 1),
])
def test_other_real_datasets_within_2_percent_of_sklearn(tmp_path, loader, k, hp, workers):
    x = loader().data
    channel = write_channel(str(tmp_path / "train"), x, parts=4, dtype=np.float64)
    _, model = train("kmeans", {"k": str(k), **hp}, channel, str(tmp_path / "model"), workers=workers)
    best = SkKMeans(n_clusters=k, n_init=10, random_state=0).fit(x).inertia_
    assert inertia(x, model.cluster_centers) <= 1.02 * best


def test_test_channel_metrics_are_exact(tmp_path, digits):
    train_x, test_x = digits[:1200], digits[1200:]
    train_channel = write_channel(str(tmp_path / "train"), train_x)
    test_channel = write_channel(str(tmp_path / "test"), test_x, parts=3)
    hp = {"k": "10", "eval_metrics": '["msd", "ssd"]'}
    results, model = train("kmeans", hp, train_channel, str(tmp_path / "m2"), workers=2,
                           test_channel=test_channel)
    ssd = pairwise_distances(test_x, model.cluster_centers, metric="sqeuclidean").min(axis=1).sum()
    for result in results:  # every worker reports the same metrics
        assert result.metrics["test:ssd"] == pytest.approx(ssd, rel=1e-9)
        assert result.metrics["test:msd"] == pytest.approx(ssd / len(test_x), rel=1e-9)

    results, _ = train("kmeans", {"k": "10"}, train_channel, str(tmp_path / "m1"), test_channel=test_channel)
    assert "test:msd" in results[0].metrics and "test:ssd" not in results[0].metrics


@pytest.mark.parametrize(("half_life", "shift"), [("0", 0.5), ("8", 2.0 / 3.0)])
def test_half_life_decay_weights_recent_batches(tmp_path, half_life, shift):
    # Two mini-batches of 8 records around (0, 0) and (10, 10); the second batch moved by +1 in x.
    # Without decay each center is the plain mean (shift 1/2); with a half-life of one batch the first
    # batch weighs 1/2, so the mean moves by 1 / 1.5 = 2/3.
    cluster = np.array([[0, 1], [0, -1], [0, 2], [0, -2]], dtype=float)
    first = np.vstack([cluster, cluster + 10])
    x = np.vstack([first, first + [1.0, 0.0]])
    channel = write_channel(str(tmp_path / "train"), x, parts=1)
    hp = {"k": "2", "extra_center_factor": "4", "mini_batch_size": "8", "half_life_time_size": half_life}
    _, model = train("kmeans", hp, channel, str(tmp_path / "model"))
    centers = model.cluster_centers[np.argsort(model.cluster_centers[:, 0])]
    np.testing.assert_allclose(centers, [[shift, 0.0], [10.0 + shift, 10.0]], atol=1e-9)


def test_training_streams_in_mini_batches_and_keeps_only_the_summary(tmp_path, digits):
    channel = write_channel(str(tmp_path / "train"), digits, parts=2)
    seen: list[int] = []

    class CountingInput(ChannelInput):
        def batches(self, batch_size):
            for batch in super().batches(batch_size):
                seen.append(len(batch))
                yield batch

    base = ChannelInput.from_channel("train", channel)
    env = TrainingEnv({"k": "10", "mini_batch_size": "256"},
                      {"train": CountingInput(**{f: getattr(base, f) for f in base.__dataclass_fields__})},
                      str(tmp_path / "model"))
    algo = KMeans(env)
    state = algo.init()
    for batch in env.channels["train"].batches(algo.batch_size()):
        state = algo.update(state, batch)
    assert max(seen) == 256 and sum(seen) == len(digits)
    assert {len(v) for v in state.values()} == {num_centers(10, "auto", 64)} == {200}
    assert num_centers(3, "auto", 50) == 201 and num_centers(3, "auto", 50_000) == 81
    assert num_centers(3, "auto", 10**7) == 30 and num_centers(3, "4", 10**7) == 12
    model = algo.finalize(algo.merge([state]))
    assert model.cluster_centers.shape == (10, 64)


def test_a_worker_without_shards_still_takes_part(tmp_path, digits, digits_best_inertia):
    channel = write_channel(str(tmp_path / "train"), digits, parts=1)
    _, model = train("kmeans", {"k": "10"}, channel, str(tmp_path / "model"), workers=2)
    assert inertia(digits, model.cluster_centers) <= 1.02 * digits_best_inertia


def test_hyperparameters_are_checked_before_training(tmp_path):
    cls = builtin.get("kmeans")
    assert cls is KMeans
    values = cls.validate({"k": "3"})
    assert values["mini_batch_size"] == 5000 and values["epochs"] == 1 and values["init_method"] == "random"
    assert values["eval_metrics"] == ["msd"] and values["local_lloyd_max_iter"] == 300
    assert values["local_lloyd_tol"] == 0.0001 and values["half_life_time_size"] == 0
    bad = [({}, "k"), ({"k": "1"}, "k"), ({"k": "2", "init_method": "kmeans"}, "init_method"),
           ({"k": "2", "local_lloyd_tol": "1.5"}, "local_lloyd_tol"),
           ({"k": "2", "extra_center_factor": "0"}, "extra_center_factor"),
           ({"k": "2", "local_lloyd_num_trials": "0"}, "local_lloyd_num_trials"),
           ({"k": "2", "half_life_time_size": "-1"}, "half_life_time_size"),
           ({"k": "2", "eval_metrics": '["msd", "rmse"]'}, "eval_metrics"),
           ({"k": "2", "epochs": "0"}, "epochs"), ({"k": "2", "learning_rate": "0.1"}, "learning_rate")]
    for hp, name in bad:
        with pytest.raises(HyperparameterError, match=name) as info:
            cls.validate(hp)
        assert info.value.name == name
    with pytest.raises(HyperparameterError, match=r"local_lloyd_tol: must be a number in \[0, 1\]"):
        cls.validate({"k": "2", "local_lloyd_tol": "2"})

    x = np.arange(60, dtype=float).reshape(20, 3)
    channel = write_channel(str(tmp_path / "train"), x, record_feature_dim=False)
    env = TrainingEnv({"k": "2"}, {"train": ChannelInput.from_channel("train", channel)}, str(tmp_path / "m"))
    with pytest.raises(ValueError, match="feature_dim"):
        KMeans(env)
    channel = write_channel(str(tmp_path / "train2"), x)
    env = TrainingEnv({"k": "2", "feature_dim": "4"}, {"train": ChannelInput.from_channel("train", channel)},
                      str(tmp_path / "m"))
    with pytest.raises(ValueError, match="feature_dim is 4 but the train channel holds 3"):
        KMeans(env)
    with pytest.raises(ValueError, match="k=25 but the training data holds 20 records"):
        train("kmeans", {"k": "25"}, channel, str(tmp_path / "m3"))
    assert not os.path.exists(tmp_path / "m3" / "manifest.json")


def test_model_round_trip_and_feature_check(tmp_path):
    model = KMeansModel({"k": "2"}, 3, np.array([[0.0, 0, 0], [1, 1, 1]]))
    model.save(str(tmp_path))
    again = KMeansModel.from_arrays(dict(np.load(tmp_path / "model.npz")), {"k": "2"}, 3)
    np.testing.assert_array_equal(again.cluster_centers, model.cluster_centers)
    out = again.predict(Batch(np.array([[0.9, 1.0, 1.2], [0.1, 0.0, -0.2]], dtype=np.float32)))
    np.testing.assert_array_equal(out["closest_cluster"], [1.0, 0.0])
    np.testing.assert_allclose(out["distance_to_cluster"], [np.sqrt(0.05), np.sqrt(0.05)], rtol=1e-6)
    assert KMeansModel.json_envelope == "predictions"
    with pytest.raises(ValueError, match="expects 3 features, got 2"):
        again.predict(Batch(np.zeros((1, 2))))


# The torch backend (GPU workers) must train what numpy trains; here on CPU tensors ----------------------
def test_torch_backend_trains_the_same_model_as_numpy(tmp_path, monkeypatch, digits):
    pytest.importorskip("torch")
    dense = write_channel(str(tmp_path / "dense"), digits, parts=2)
    sparse = write_channel(str(tmp_path / "sparse"), digits, parts=2, sparse=True)
    _, reference = train("kmeans", {"k": "10"}, dense, str(tmp_path / "numpy"))
    monkeypatch.setenv(BACKEND_ENV, "torch:cpu")
    _, on_torch = train("kmeans", {"k": "10"}, dense, str(tmp_path / "torch"))
    _, on_torch_sparse = train("kmeans", {"k": "10", "force_dense": "False"}, sparse,
                               str(tmp_path / "torch_sp"))
    for model in (on_torch, on_torch_sparse):
        np.testing.assert_allclose(model.cluster_centers, reference.cluster_centers, rtol=1e-6, atol=1e-6)


def test_sparse_high_dimensional_rows_stay_sparse(tmp_path, monkeypatch):
    rows, dim = 600, 20_000
    rng = np.random.default_rng(5)
    columns = rng.choice(dim, size=(3, 100), replace=False)  # three clusters, each on its own 100 columns
    cluster = np.arange(rows) % 3
    values = 1.0 + 0.3 * rng.standard_normal((rows, 100))
    x = sp.csr_matrix((values.ravel(), (np.repeat(np.arange(rows), 100), columns[cluster].ravel())),
                      shape=(rows, dim))
    best = SkKMeans(n_clusters=3, n_init=10, random_state=0).fit(x).inertia_
    channel = write_channel(str(tmp_path / "train"), x, parts=2, sparse=True)
    densified: list[tuple[int, int]] = []
    toarray = sp.csr_matrix.toarray

    def watched(self, *args, **kwargs):
        densified.append(self.shape)
        return toarray(self, *args, **kwargs)

    monkeypatch.setattr(sp.csr_matrix, "toarray", watched)
    hp = {"k": "3", "force_dense": "false", "init_method": "kmeans++", "mini_batch_size": "200",
          "extra_center_factor": "10"}
    _, model = train("kmeans", hp, channel, str(tmp_path / "model"), workers=2)
    # only the centers' sums (30 centers here) are ever dense, never a mini-batch of 200 rows
    assert densified and not [shape for shape in densified if shape[0] > 30]
    monkeypatch.undo()
    d2 = model.predict(Batch(x))["distance_to_cluster"].astype(np.float64) ** 2
    assert d2.sum() <= 1.02 * best


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stream_sorted_by_class_is_summarized_as_well(tmp_path, digits, digits_best_inertia, workers):
    # records ordered by digit: the first mini-batches hold only 0s and 1s, later ones only 8s and 9s
    order = np.argsort(load_digits().target, kind="stable")
    channel = write_channel(str(tmp_path / "train"), digits[order], parts=2)
    _, model = train("kmeans", {"k": "10", "mini_batch_size": "300"}, channel, str(tmp_path / "model"),
                     workers=workers)
    assert inertia(digits, model.cluster_centers) <= 1.02 * digits_best_inertia

"""PCA against scikit-learn on its bundled real datasets, through real channels and the training contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from _kmeans_pca_support import train, write_channel
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.decomposition import PCA as SkPCA

from algorithms import builtin
from algorithms.backend import ENV as BACKEND_ENV
from algorithms.batch import Batch
from algorithms.builtin.pca import PCA, PCAModel, chan_merge, sketch_size
from algorithms.channel import RECORDIO_PROTOBUF, Channel, Manifest, Shard
from algorithms.hyperparameters import HyperparameterError
from algorithms.tensor_codec import encode_sparse
from algorithms.training import ChannelInput, TrainingEnv


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data


def sklearn_pca(x: np.ndarray, n: int) -> SkPCA:
    return SkPCA(n_components=n, svd_solver="full").fit(x)


def assert_same_axes(ours: np.ndarray, theirs: np.ndarray, tol: float) -> None:
    """Row by row the same unit vectors up to sign."""
    cosines = np.abs(np.einsum("ij,ij->i", ours, theirs))
    np.testing.assert_allclose(cosines, 1.0, atol=tol)


def captured_variance(x: np.ndarray, components: np.ndarray) -> float:
    centered = x - x.mean(axis=0)
    return float(np.sum((centered @ components.T) ** 2))


def test_regular_mode_equals_sklearn_on_digits(tmp_path, digits):
    channel = write_channel(str(tmp_path / "train"), digits, parts=3)
    hp = {"num_components": "10", "feature_dim": "64"}
    results, model = train("pca", hp, channel, str(tmp_path / "model"))
    reference = sklearn_pca(digits, 10)
    assert isinstance(model, PCAModel) and model.num_components == 10
    np.testing.assert_allclose(model.explained_variance, reference.explained_variance_, rtol=1e-5)
    np.testing.assert_allclose(model.explained_variance_ratio, reference.explained_variance_ratio_, rtol=1e-5)
    np.testing.assert_allclose(model.singular_values, reference.singular_values_, rtol=1e-5)
    np.testing.assert_allclose(model.mean.ravel(), reference.mean_, rtol=1e-9)
    assert_same_axes(model.components, reference.components_, 1e-6)
    # sign rule: each component's largest-magnitude loading is positive (scikit-learn's rule too)
    components = model.components
    assert (components[np.arange(10), np.abs(components).argmax(axis=1)] > 0).all()
    np.testing.assert_allclose(components, reference.components_, atol=1e-6)

    out = model.predict(Batch(digits.astype(np.float32)))
    assert list(out) == ["projection"] and out["projection"].dtype == np.float32
    np.testing.assert_allclose(out["projection"], reference.transform(digits), atol=2e-4)
    assert results[0].metrics["train:explained_variance_ratio"] == pytest.approx(
        reference.explained_variance_ratio_.sum(), rel=1e-6)
    with open(tmp_path / "model" / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["algorithm"] == "pca" and manifest["feature_dim"] == 64
    arrays = dict(np.load(tmp_path / "model" / "model.npz"))
    assert arrays["s"].shape == (10,) and arrays["v"].shape == (64, 10) and arrays["mean"].shape == (1, 64)


def test_randomized_mode_within_1_percent_of_sklearn_on_digits(tmp_path, digits):
    channel = write_channel(str(tmp_path / "train"), digits, parts=3)
    hp = {"num_components": "10", "algorithm_mode": "randomized"}
    _, model = train("pca", hp, channel, str(tmp_path / "model"))
    reference = sklearn_pca(digits, 10)
    np.testing.assert_allclose(model.explained_variance, reference.explained_variance_, rtol=0.01)
    # the subspace found keeps (nearly) all the variance the exact top-10 subspace keeps
    exact = captured_variance(digits, reference.components_)
    assert captured_variance(digits, model.components) >= 0.999 * exact
    np.testing.assert_allclose(np.linalg.norm(model.components, axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(model.components @ model.components.T, np.eye(10), atol=1e-9)


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_sparse_records_and_two_workers_agree_with_one_dense_worker(tmp_path, digits, mode):
    dense = write_channel(str(tmp_path / "dense"), digits, parts=4)
    sparse = write_channel(str(tmp_path / "sparse"), digits, parts=4, sparse=True)
    hp = {"num_components": "8", "algorithm_mode": mode}
    _, reference = train("pca", hp, dense, str(tmp_path / "ref"))
    runs = [train("pca", hp, sparse, str(tmp_path / "s1"))[1],
            train("pca", {**hp, "force_dense": "True"}, sparse, str(tmp_path / "s1d"))[1],
            train("pca", hp, dense, str(tmp_path / "d2"), workers=2)[1],
            train("pca", hp, sparse, str(tmp_path / "s2"), workers=2)[1]]
    exact = sklearn_pca(digits, 8).explained_variance_
    for model in runs:
        np.testing.assert_allclose(model.explained_variance, reference.explained_variance, rtol=1e-9)
        np.testing.assert_allclose(model.explained_variance, exact, rtol=1e-5 if mode == "regular" else 0.01)
        np.testing.assert_allclose(model.mean, reference.mean, rtol=1e-12, atol=1e-12)
        assert_same_axes(model.components, reference.components, 1e-7)
    out_sparse = reference.predict(Batch(sp.csr_matrix(digits)))["projection"]
    np.testing.assert_allclose(out_sparse, reference.predict(Batch(digits))["projection"], atol=1e-4)


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_breast_cancer_matches_sklearn(tmp_path, mode):
    x = load_breast_cancer().data  # features on very different scales
    channel = write_channel(str(tmp_path / "train"), x, parts=3, dtype=np.float64)
    hp = {"num_components": "5", "algorithm_mode": mode, "mini_batch_size": "100"}
    _, model = train("pca", hp, channel, str(tmp_path / "model"), workers=2)
    reference = sklearn_pca(x, 5)
    np.testing.assert_allclose(model.explained_variance, reference.explained_variance_,
                               rtol=1e-5 if mode == "regular" else 0.01)
    assert_same_axes(model.components, reference.components_, 1e-5)
    np.testing.assert_allclose(model.predict(Batch(x))["projection"], reference.transform(x),
                               rtol=1e-4, atol=1e-3 * np.abs(reference.transform(x)).max())


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_without_mean_subtraction_the_axes_are_the_raw_singular_vectors(tmp_path, digits, mode):
    channel = write_channel(str(tmp_path / "train"), digits)
    hp = {"num_components": "4", "subtract_mean": "false", "algorithm_mode": mode}
    _, model = train("pca", hp, channel, str(tmp_path / "model"))
    _, s, vt = np.linalg.svd(digits, full_matrices=False)
    np.testing.assert_allclose(model.singular_values, s[:4], rtol=1e-5 if mode == "regular" else 1e-3)
    assert_same_axes(model.components, vt[:4], 1e-5 if mode == "regular" else 1e-3)
    np.testing.assert_array_equal(model.mean, 0.0)
    projection = model.predict(Batch(digits))["projection"]
    np.testing.assert_allclose(projection, digits @ model.components.T, rtol=1e-5)


def test_test_channel_reports_the_variance_kept(tmp_path, digits):
    train_channel = write_channel(str(tmp_path / "train"), digits[:1300])
    test_channel = write_channel(str(tmp_path / "test"), digits[1300:], parts=3)
    results, model = train("pca", {"num_components": "6"}, train_channel, str(tmp_path / "model"), workers=2,
                           test_channel=test_channel)
    reference = sklearn_pca(digits[:1300], 6)
    centered = digits[1300:] - reference.mean_
    expected = np.sum((centered @ reference.components_.T) ** 2) / np.sum(centered**2)
    for result in results:
        assert result.metrics["test:explained_variance_ratio"] == pytest.approx(expected, rel=1e-6)


def test_chan_merge_is_exact_for_a_large_mean():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4)) + 1e6
    parts = [x[:7], x[7:150], x[150:]]
    states = [{"n": np.array([len(p)], float), "mean": p.mean(axis=0),
               "scatter": (p - p.mean(0)).T @ (p - p.mean(0))} for p in parts]
    merged = chan_merge(chan_merge(states[0], states[1]), states[2])
    exact = np.cov(x, rowvar=False) * 299
    np.testing.assert_allclose(merged["scatter"], exact, atol=1e-10 * np.trace(exact))
    # the textbook Σxxᵀ - n·μμᵀ loses everything at this offset
    naive = x.T @ x - 300 * np.outer(x.mean(0), x.mean(0))
    assert np.abs(naive - exact).max() > 1e3 * np.abs(merged["scatter"] - exact).max()
    np.testing.assert_allclose(merged["mean"], x.mean(axis=0), rtol=1e-15)


def test_hyperparameters_are_checked_before_training(tmp_path, digits):
    cls = builtin.get("pca")
    assert cls is PCA
    values = cls.validate({"num_components": "3"})
    assert values["mini_batch_size"] == 500 and values["algorithm_mode"] == "regular"
    assert values["subtract_mean"] is True and values["extra_components"] == -1
    bad = [({}, "num_components"), ({"num_components": "0"}, "num_components"),
           ({"num_components": "2", "algorithm_mode": "fast"}, "algorithm_mode"),
           ({"num_components": "2", "extra_components": "-2"}, "extra_components"),
           ({"num_components": "2", "subtract_mean": "yes"}, "subtract_mean"),
           ({"num_components": "2", "mini_batch_size": "0"}, "mini_batch_size"),
           ({"num_components": "5", "feature_dim": "4"}, "num_components")]
    for hp, name in bad:
        with pytest.raises(HyperparameterError) as info:
            cls.validate(hp)
        assert info.value.name == name
    with pytest.raises(HyperparameterError, match=r"extra_components: must be an integer in \[-1, inf\)"):
        cls.validate({"num_components": "2", "extra_components": "-5"})
    assert sketch_size(3, -1, 100) == 13 and sketch_size(20, -1, 100) == 40 and sketch_size(3, 0, 100) == 3
    assert sketch_size(10, 200, 64) == 64

    channel = write_channel(str(tmp_path / "train"), digits[:50])  # feature_dim from the manifest: 64
    env = TrainingEnv({"num_components": "65"}, {"train": ChannelInput.from_channel("train", channel)},
                      str(tmp_path / "m"))
    with pytest.raises(HyperparameterError, match="num_components: must be at most feature_dim"):
        PCA(env)
    one = write_channel(str(tmp_path / "one"), digits[:1])
    with pytest.raises(ValueError, match="at least 2 training records"):
        train("pca", {"num_components": "2"}, one, str(tmp_path / "m1"), workers=2)


def test_streams_blocks_and_keeps_only_the_summary(tmp_path, digits, monkeypatch):
    import algorithms.builtin.pca as pca_module

    channel = write_channel(str(tmp_path / "train"), digits)
    seen: list[int] = []

    class CountingInput(ChannelInput):
        def blocks(self, max_rows):
            for batch in super().blocks(max_rows):
                seen.append(len(batch))
                yield batch

    # blocks of max(mini_batch_size, BLOCK_ROWS) rows, cut from the decoded chunks (one chunk holds all here)
    monkeypatch.setattr(pca_module, "BLOCK_ROWS", 100)

    base = ChannelInput.from_channel("train", channel)
    env = TrainingEnv({"num_components": "3", "mini_batch_size": "700"},
                      {"train": CountingInput(**{f: getattr(base, f) for f in base.__dataclass_fields__})},
                      str(tmp_path / "m"))
    algo = PCA(env)
    merged = algo._pass()
    halves = [len(h) for h in np.array_split(digits, 2)]  # the channel's two shards: blocks stay inside one
    assert seen == [700, halves[0] - 700, 700, halves[1] - 700]
    assert {k: v.shape for k, v in merged.items()} == {"n": (1,), "mean": (64,), "scatter": (64, 64)}
    np.testing.assert_allclose(merged["scatter"] / (len(digits) - 1), np.cov(digits, rowvar=False), atol=1e-9)


def test_model_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    v = np.linalg.qr(rng.standard_normal((5, 2)))[0]
    model = PCAModel({"num_components": "2"}, 5, [3.0, 1.0], v, np.arange(5.0)[None, :], 10, 12.0)
    model.save(str(tmp_path))
    again = PCAModel.from_arrays(dict(np.load(tmp_path / "model.npz")), {"num_components": "2"}, 5)
    x = rng.standard_normal((4, 5))
    np.testing.assert_allclose(again.predict(Batch(x))["projection"], (x - np.arange(5.0)) @ v, rtol=1e-6)
    np.testing.assert_allclose(again.explained_variance, [1.0, 1.0 / 9.0])
    np.testing.assert_allclose(again.explained_variance_ratio, [9.0 / 12.0, 1.0 / 12.0])
    assert PCAModel.json_envelope == "projections"
    assert [(o.name, o.kind) for o in PCAModel.outputs] == [("projection", "vector")]


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_torch_backend_trains_the_same_model_as_numpy(tmp_path, monkeypatch, digits, mode):
    pytest.importorskip("torch")
    dense = write_channel(str(tmp_path / "dense"), digits, parts=2)
    sparse = write_channel(str(tmp_path / "sparse"), digits, parts=2, sparse=True)
    hp = {"num_components": "6", "algorithm_mode": mode}
    _, reference = train("pca", hp, dense, str(tmp_path / "numpy"))
    monkeypatch.setenv(BACKEND_ENV, "torch:cpu")
    for name, channel in (("dense", dense), ("sparse", sparse)):
        _, model = train("pca", hp, channel, str(tmp_path / f"torch-{name}"), workers=2)
        np.testing.assert_allclose(model.explained_variance, reference.explained_variance, rtol=1e-9)
        assert_same_axes(model.components, reference.components, 1e-8)


def sparse_topics(rows: int, dim: int) -> sp.csr_matrix:
    """Sparse rows mixing 8 sparse "topics" (200 columns each) with decaying weights, plus sparse noise."""
    rng = np.random.default_rng(0)
    topic_columns = rng.choice(dim, size=8 * 200, replace=False)
    topics = np.zeros((8, len(topic_columns)))
    for t in range(8):
        topics[t, t * 200 : (t + 1) * 200] = rng.standard_normal(200)
    weights = rng.standard_normal((rows, 8)) * (10 * 2.0 ** -np.arange(8))[None, :]
    signal_at = (np.repeat(np.arange(rows), len(topic_columns)), np.tile(topic_columns, rows))
    signal = sp.coo_matrix((np.ravel(weights @ topics), signal_at), shape=(rows, dim))
    noise_at = (np.repeat(np.arange(rows), 5), rng.integers(0, dim, size=rows * 5))
    noise = sp.coo_matrix((rng.standard_normal(rows * 5), noise_at), shape=(rows, dim))
    return sp.csr_matrix(signal + noise)


def test_randomized_mode_handles_large_sparse_feature_dim_without_densifying(tmp_path, monkeypatch):
    x = sparse_topics(600, 50_000)  # the regular mode's scatter matrix would take 20 GB
    # exact variances from the columns that hold data (dense, small)
    used = np.unique(x.indices)
    compact = x[:, used].toarray()
    centered = compact - compact.mean(axis=0)
    exact = np.sort(np.linalg.eigvalsh(centered @ centered.T))[::-1][:5] / (x.shape[0] - 1)
    path = tmp_path / "train"
    path.mkdir()
    data = encode_sparse(x)
    (path / "part-00000.pbr").write_bytes(data)
    (path / "part-00001.pbr").write_bytes(b"")
    manifest = Manifest(RECORDIO_PROTOBUF, (Shard("part-00000.pbr", x.shape[0], len(data)),
                                            Shard("part-00001.pbr", 0, 0)), feature_dim=50_000, sparse=True)
    (path / "manifest.json").write_text(manifest.to_json())

    densified: list[tuple[int, int]] = []
    toarray = sp.csr_matrix.toarray

    def watched(self, *args, **kwargs):
        densified.append(self.shape)
        return toarray(self, *args, **kwargs)

    monkeypatch.setattr(sp.csr_matrix, "toarray", watched)
    hp = {"num_components": "5", "algorithm_mode": "randomized", "mini_batch_size": "100"}
    _, model = train("pca", hp, Channel.open(str(path)), str(tmp_path / "model"), workers=2)
    assert not [shape for shape in densified if shape[0] * shape[1] > 50_000]
    np.testing.assert_allclose(model.explained_variance, exact, rtol=0.01)
    mean = np.zeros(50_000)
    mean[used] = compact.mean(axis=0)
    np.testing.assert_allclose(model.mean.ravel(), mean, atol=1e-12)


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_a_large_mean_costs_no_precision(tmp_path, digits, mode):
    shifted = digits + 1e6  # float64 records
    channel = write_channel(str(tmp_path / "train"), shifted, parts=2, dtype=np.float64)
    hp = {"num_components": "5", "algorithm_mode": mode}
    _, model = train("pca", hp, channel, str(tmp_path / "model"), workers=2)
    reference = sklearn_pca(digits, 5)  # the same spread around the mean
    np.testing.assert_allclose(model.explained_variance, reference.explained_variance_,
                               rtol=1e-5 if mode == "regular" else 0.01)
    np.testing.assert_allclose(model.explained_variance_ratio, reference.explained_variance_ratio_,
                               rtol=1e-5 if mode == "regular" else 0.01)
    assert_same_axes(model.components, reference.components_, 1e-5 if mode == "regular" else 1e-3)

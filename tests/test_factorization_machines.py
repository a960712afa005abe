"""Factorization Machines through real channel files and the training contract, workers as threads.

Quality is checked against scikit-learn's linear models on held-out data (synthetic pairwise-interaction
problems, where FM must win, and bundled real datasets, where it must match), the math against a
brute-force pairwise sum and finite differences, and the optimizer against a plain re-statement of
MXNet's Adam update.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from algorithms import builtin
from algorithms.artifact import ArtifactError
from algorithms.backend import ENV as BACKEND_VARIABLE
from algorithms.batch import Batch
from algorithms.builtin import load_model, run_builtin
from algorithms.builtin.factorization_machines import algorithm as fm_module
from algorithms.builtin.factorization_machines.kernels import NumpyFMOps, TorchFMOps
from algorithms.builtin.factorization_machines.params import SPEC, FMConfig
from algorithms.builtin.factorization_machines.state import initial_state, merge_touched, touched_rows
from algorithms.builtin.factorization_machines.trainer import FMTrainer, prepare, raw_scores
from algorithms.channel import RECORDIO_PROTOBUF, Channel, Manifest, Shard
from algorithms.hyperparameters import HyperparameterError
from algorithms.tensor_codec import encode_dense, encode_sparse
from algorithms.training import ChannelInput, Reporter, ThreadGroup, TrainingEnv

NAME = "factorization-machines"


# ------------------------------------------------------------------------------------------------ helpers
class RecordingReporter(Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[str, float, int | None]] = []

    def metric(self, name, value, epoch=None, step=None):
        super().metric(name, value, epoch, step)
        self.history.append((name, float(value), epoch))


def write_channel(path, x, y, shards: int = 2) -> Channel:
    """recordIO-protobuf part files (as the SDK writes them) plus manifest.json."""
    os.makedirs(path)
    written = []
    for i, rows in enumerate(np.array_split(np.arange(x.shape[0]), shards)):
        data = encode_sparse(x[rows], y[rows]) if sp.issparse(x) else encode_dense(x[rows], y[rows])
        name = f"part-{i:05d}.pbr"
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
        written.append(Shard(name, len(rows), len(data)))
    manifest = Manifest(RECORDIO_PROTOBUF, tuple(written), feature_dim=x.shape[1], has_label=True,
                        sparse=sp.issparse(x), feature_dtype="float32")
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write(manifest.to_json())
    return Channel.open(str(path))


def fit(hyperparameters: dict, train: Channel, model_dir, workers: int = 1, test: Channel | None = None):
    """Run ``workers`` training workers as threads; returns the loaded model and each worker's reporter.

    Shards are dealt round-robin; a FullyReplicated ``test`` channel gives every worker all its shards.
    """
    reporters = [RecordingReporter() for _ in range(workers)]

    def work(rank: int, collectives) -> None:
        channels = {"train": ChannelInput.from_channel("train", train, train.shards()[rank::workers])}
        if test is not None:
            replicated = test.distribution == "FullyReplicated"
            shards = test.shards() if replicated else test.shards()[rank::workers]
            channels["test"] = ChannelInput.from_channel("test", test, shards)
        env = TrainingEnv(hyperparameters={k: str(v) for k, v in hyperparameters.items()},
                          channels=channels, model_dir=str(model_dir), rank=rank,
                          hosts=[f"algo-{i + 1}" for i in range(workers)],
                          collectives=collectives, reporter=reporters[rank])
        run_builtin(NAME, env)

    ThreadGroup(workers, timeout=120).run(work)
    return load_model(str(model_dir)), reporters


def interaction_data(n: int, d: int, seed: int):
    """Gaussian features; the target is mostly pairwise products, which no linear model can express."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    signal = 2.0 * (x[:, 0] * x[:, 1] - x[:, 2] * x[:, 3]) + x[:, 4] - 0.5 * x[:, 5]
    return x, signal, rng


def config(**values) -> FMConfig:
    base = {"feature_dim": 12, "num_factors": 3, "predictor_type": "regressor"}
    base.update(values)
    parsed = FMClassifier.validate(base)
    return FMConfig.from_values(parsed, parsed["feature_dim"])


FMClassifier = builtin.get(NAME)


# ------------------------------------------------------------------------------------------ hyperparameters
def test_registered_with_sagemaker_defaults():
    assert FMClassifier is fm_module.FactorizationMachines
    values = FMClassifier.validate({"feature_dim": "100", "num_factors": "64", "predictor_type": "regressor"})
    expected = {"epochs": 1, "mini_batch_size": 1000, "bias_lr": 0.1, "linear_lr": 0.001,
                "factors_lr": 0.0001, "bias_wd": 0.01, "linear_wd": 0.001, "factors_wd": 0.00001,
                "bias_init_method": "normal",
                "linear_init_method": "normal", "factors_init_method": "normal", "bias_init_sigma": 0.01,
                "linear_init_sigma": 0.01, "factors_init_sigma": 0.001, "clip_gradient": None, "eps": None,
                "rescale_grad": None, "bias_init_scale": None, "factors_init_value": None}
    assert {k: values[k] for k in expected} == expected
    assert set(SPEC.names()) == {"feature_dim", "num_factors", "predictor_type", "epochs", "mini_batch_size",
                                 "clip_gradient", "eps", "rescale_grad"} | {
        f"{g}_{p}" for g in ("bias", "linear", "factors")
        for p in ("lr", "wd", "init_method", "init_scale", "init_sigma", "init_value")}
    assert SPEC["factors_init_sigma"].param_name == "factorsInitSigma"


@pytest.mark.parametrize("name, value, range_text", [
    ("num_factors", "0", "an integer in [1, inf)"),
    ("feature_dim", "-3", "an integer in [1, inf)"),
    ("predictor_type", "multiclass_classifier", "one of binary_classifier, regressor"),
    ("epochs", "0", "an integer in [1, inf)"),
    ("mini_batch_size", "1.5", "an integer in [1, inf)"),
    ("factors_lr", "-0.1", "a number in [0, inf)"),
    ("linear_wd", "-1e-3", "a number in [0, inf)"),
    ("bias_init_sigma", "-1", "a number in [0, inf)"),
    ("linear_init_scale", "-2", "a number in [0, inf)"),
    ("bias_init_method", "xavier", "one of normal, uniform, constant"),
    ("eps", "0", "a number in (0, inf)"),
    ("rescale_grad", "-1", "a number in (0, inf)"),
    ("clip_gradient", "lots", "a number"),
])
def test_bad_values_fail_before_training_naming_the_hyperparameter_and_range(name, value, range_text):
    good = {"feature_dim": "10", "num_factors": "4", "predictor_type": "binary_classifier"}
    with pytest.raises(HyperparameterError) as info:
        FMClassifier.validate({**good, name: value})
    assert info.value.name == name
    assert range_text in str(info.value) and name in str(info.value)


@pytest.mark.parametrize("missing", ["feature_dim", "num_factors", "predictor_type"])
def test_required_hyperparameters(missing):
    good = {"feature_dim": "10", "num_factors": "4", "predictor_type": "regressor"}
    del good[missing]
    with pytest.raises(HyperparameterError, match=f"{missing}: is required"):
        FMClassifier.validate(good)


def test_init_method_needs_its_companion():
    good = {"feature_dim": "10", "num_factors": "4", "predictor_type": "regressor"}
    with pytest.raises(HyperparameterError,
                       match="factors_init_scale: is required when factors_init_method is uniform"):
        FMClassifier.validate({**good, "factors_init_method": "uniform"})
    with pytest.raises(HyperparameterError,
                       match="bias_init_value: is required when bias_init_method is constant"):
        FMClassifier.validate({**good, "bias_init_method": "constant"})
    FMClassifier.validate({**good, "bias_init_method": "constant", "bias_init_value": "-1.5"})


def test_init_methods_draw_as_documented():
    cfg = config(feature_dim=4000, num_factors=5, bias_init_method="constant", bias_init_value=0.25,
                 linear_init_method="uniform", linear_init_scale=0.3, factors_init_sigma=0.02)
    state = initial_state(cfg)
    assert state["w0"].tolist() == [0.25]
    w, v = state["theta"][:, 0], state["theta"][:, 1:]
    assert w.min() >= -0.3 and w.max() <= 0.3 and w.max() - w.min() > 0.59  # fills [-0.3, 0.3]
    assert v.shape == (4000, 5) and abs(v.std() - 0.02) < 0.001 and abs(v.mean()) < 0.001
    assert (initial_state(cfg)["theta"] == state["theta"]).all()  # every worker starts from the same model


# ------------------------------------------------------------------------------------------------ the math
def brute_force_scores(x, w0, w, v):
    x = np.asarray(x.todense() if sp.issparse(x) else x, dtype=np.float64)
    pair = np.einsum("ni,nj,if,jf->n", x, x, v, v) - np.einsum("ni,if->n", x * x, v * v)
    return w0 + x @ w + pair / 2  # Σ_{i<j} <v_i, v_j> x_i x_j


@pytest.mark.parametrize("sparse", [False, True])
def test_scores_match_the_pairwise_definition(sparse):
    rng = np.random.default_rng(3)
    x = sp.random(40, 15, density=0.3, format="csr", dtype=np.float32, random_state=4)
    x = x if sparse else x.toarray()
    w, v = rng.standard_normal(15), rng.standard_normal((15, 4))
    theta = np.column_stack([w, v]).astype(np.float32)
    fast = raw_scores(x, 0.7, theta, theta[:, 1:] ** 2)
    np.testing.assert_allclose(fast, brute_force_scores(x, 0.7, w, v), rtol=1e-4, atol=1e-4)


def loss_fn(x, y, w0, theta, binary):
    raw = brute_force_scores(x, w0, theta[:, 0], theta[:, 1:])
    if binary:
        return float(np.mean(np.logaddexp(0, raw) - y * raw))
    return float(np.mean(0.5 * (raw - y) ** 2))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("predictor_type", ["binary_classifier", "regressor"])
def test_gradients_match_finite_differences(backend, sparse, predictor_type):
    cfg = config(predictor_type=predictor_type, factors_init_sigma=0.3, linear_init_sigma=0.3)
    rng = np.random.default_rng(5)
    x = sp.random(30, 12, density=0.25, format="csr", dtype=np.float32, random_state=6)
    x = sp.csr_matrix(x.multiply(np.arange(12) != 7))  # column 7 unused: absent from a sparse batch
    x.eliminate_zeros()
    y = (rng.random(30) < 0.5).astype(np.float32) if predictor_type == "binary_classifier" else \
        rng.standard_normal(30).astype(np.float32)
    ops = NumpyFMOps() if backend == "numpy" else TorchFMOps("cpu")
    state = initial_state(cfg)
    trainer = FMTrainer(cfg, {k: v.copy() for k, v in state.items()}, ops)
    batch = prepare(Batch(x if sparse else x.toarray(), y), cfg, "train", 0)
    _, grad_w0, grad, _, _ = trainer.gradients(batch)
    grad, grad_w0 = ops.to_numpy(grad).astype(np.float64), float(ops.to_numpy(grad_w0)[0])
    rows = np.arange(12) if batch.cols is None else batch.cols
    if sparse:
        assert 7 not in rows and len(rows) < 12  # the gradient only covers the columns the batch uses
    theta, w0, binary = state["theta"].astype(np.float64), float(state["w0"][0]), cfg.binary
    h = 1e-5
    for r, i in enumerate(rows):
        for j in range(theta.shape[1]):
            up, down = theta.copy(), theta.copy()
            up[i, j] += h
            down[i, j] -= h
            numeric = (loss_fn(x, y, w0, up, binary) - loss_fn(x, y, w0, down, binary)) / (2 * h)
            assert grad[r, j] == pytest.approx(numeric, rel=2e-3, abs=2e-6)
    numeric_w0 = (loss_fn(x, y, w0 + h, theta, binary) - loss_fn(x, y, w0 - h, theta, binary)) / (2 * h)
    assert grad_w0 == pytest.approx(numeric_w0, rel=1e-3, abs=1e-6)


def test_optimizer_follows_mxnet_adam_with_group_rates_decay_clipping_and_rescale():
    """Only the bias and feature 0 are active, so every step can be re-stated by hand."""
    cfg = config(feature_dim=3, num_factors=2, bias_lr=0.05, linear_lr=0.02, factors_lr=0.01, bias_wd=0.1,
                 linear_wd=0.2, factors_wd=0.3, clip_gradient=0.05, rescale_grad=0.5, eps=1e-6,
                 factors_init_sigma=0.5)
    state = initial_state(cfg)
    trainer = FMTrainer(cfg, {k: v.copy() for k, v in state.items()}, NumpyFMOps())
    x = np.zeros((4, 3), np.float32)
    x[:, 0] = [1.0, 2.0, -1.0, 0.5]
    y = np.array([1.0, 3.0, -2.0, 0.0], np.float32)
    w0, th = float(state["w0"][0]), state["theta"].astype(np.float64)
    moments = {"w0": [0.0, 0.0], "th": [np.zeros_like(th), np.zeros_like(th)]}
    lr = {"w0": 0.05, "th": np.array([0.02, 0.01, 0.01])}
    wd = {"w0": 0.1, "th": np.array([0.2, 0.3, 0.3])}
    for t in range(1, 4):
        raw = w0 + x[:, 0] * th[0, 0]  # one active feature: no pairwise term
        r = (raw - y) * 0.5  # rescale_grad replaces the 1/batch mean
        grad_th = np.zeros_like(th)  # ∂/∂v_0 = x0·(XV)_f − v_0·x0² = 0 with a single active feature
        grad_th[0, 0] = (r * x[:, 0]).sum()
        grads, values = {"w0": r.sum(), "th": grad_th}, {"w0": w0, "th": th}
        for key in ("w0", "th"):
            g = np.clip(grads[key] + wd[key] * values[key], -0.05, 0.05)
            m, s = moments[key]
            m = 0.9 * m + 0.1 * g
            s = 0.999 * s + 0.001 * g * g
            moments[key] = [m, s]
            step_lr = lr[key] * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
            values[key] = values[key] - step_lr * m / (np.sqrt(s) + 1e-6)
        w0, th = values["w0"], values["th"]
        trainer.step(prepare(Batch(x, y), cfg, "train", 0))
    out = trainer.export()
    assert out["w0"][0] == pytest.approx(w0, rel=1e-5)
    np.testing.assert_allclose(out["theta"], th, rtol=1e-5, atol=1e-7)
    assert out["t"][0] == 3


def test_sparse_steps_are_lazy():
    cfg = config(feature_dim=6, num_factors=2)
    state = initial_state(cfg)
    trainer = FMTrainer(cfg, {k: v.copy() for k, v in state.items()}, NumpyFMOps())
    x = sp.csr_matrix(np.array([[1, 0, 2, 0, 0, 0], [0, 0, 1, 0, 0, 0]], np.float32))
    trainer.step(prepare(Batch(x, np.array([1.0, 0.0], np.float32)), cfg, "train", 0))
    out = trainer.export()
    untouched = [1, 3, 4, 5]
    assert (out["theta"][untouched] == state["theta"][untouched]).all()
    assert (out["m_theta"][untouched] == 0).all()
    assert (out["theta"][[0, 2]] != state["theta"][[0, 2]]).all()
    assert out["counts"].tolist() == [1, 0, 2, 0, 0, 0]


def test_merge_weights_each_feature_by_the_records_that_touched_it():
    def worker(theta_value, counts, rows, w0):
        return {"w0": np.array([w0], np.float32), "theta": np.full((3, 2), theta_value, np.float32),
                "m_w0": np.zeros(1, np.float32), "v_w0": np.zeros(1, np.float32),
                "m_theta": np.full((3, 2), theta_value, np.float32), "v_theta": np.zeros((3, 2), np.float32),
                "t": np.array([rows], np.int64), "rows": np.array([float(rows)]),
                "counts": np.array(counts, np.float64), "stats": np.array([1.0, 2.0])}

    a = worker(1.0, [3, 1, 0], rows=3, w0=1.0)
    b = worker(5.0, [1, 0, 0], rows=1, w0=5.0)
    sent = touched_rows(b)  # what b puts on the wire: only the rows its records touched
    assert sent["touched"].tolist() == [0] and sent["theta"].shape == (1, 2)
    merged = merge_touched(a, [touched_rows(a), touched_rows(b)])  # what a's worker does after an epoch
    np.testing.assert_allclose(merged["theta"][:, 0], [2.0, 1.0, 1.0])  # 3:1 weights; only a; nobody (a's)
    np.testing.assert_allclose(merged["m_theta"][:, 1], [2.0, 1.0, 1.0])
    assert merged["w0"][0] == pytest.approx(2.0)  # weighted by records
    assert merged["rows"][0] == 4 and merged["t"][0] == 3
    assert merged["counts"].tolist() == [4, 1, 0] and merged["stats"].tolist() == [2.0, 4.0]


# ------------------------------------------------------------------------------------------------ backends
@pytest.mark.parametrize("sparse", [False, True])
def test_torch_backend_trains_the_same_model(tmp_path, monkeypatch, sparse):
    x, signal, rng = interaction_data(1500, 10, seed=11)
    y = (signal > 0).astype(np.float32)
    features = sp.csr_matrix(np.where(rng.random(x.shape) < 0.5, x, 0)) if sparse else x
    train = write_channel(tmp_path / "train", features, y)
    hp = {"feature_dim": 10, "num_factors": 4, "predictor_type": "binary_classifier", "epochs": 2,
          "mini_batch_size": 100, "factors_lr": 0.01, "linear_lr": 0.01}
    monkeypatch.setenv(BACKEND_VARIABLE, "numpy")
    numpy_model, _ = fit(hp, train, tmp_path / "numpy", workers=2)
    monkeypatch.setenv(BACKEND_VARIABLE, "torch")
    torch_model, _ = fit(hp, train, tmp_path / "torch", workers=2)
    np.testing.assert_allclose(torch_model.V, numpy_model.V, atol=2e-5)
    np.testing.assert_allclose(torch_model.w, numpy_model.w, atol=2e-5)
    assert torch_model.w0 == pytest.approx(numpy_model.w0, abs=2e-5)


# ------------------------------------------------------------------------------------------------ quality
def test_binary_interactions_beat_logistic_regression_with_one_and_two_workers(tmp_path):
    x, signal, rng = interaction_data(12_000, 20, seed=1)
    y = (rng.random(len(signal)) < 1 / (1 + np.exp(-signal))).astype(np.float32)
    x_train, y_train, x_test, y_test = x[:10_000], y[:10_000], x[10_000:], y[10_000:]
    linear = LogisticRegression().fit(x_train, y_train)
    linear_acc = accuracy_score(y_test, linear.predict(x_test))
    linear_loss = log_loss(y_test, linear.predict_proba(x_test)[:, 1])
    train = write_channel(tmp_path / "train", x_train, y_train)
    test = write_channel(tmp_path / "test", x_test, y_test)
    hp = {"feature_dim": 20, "num_factors": 8, "predictor_type": "binary_classifier", "epochs": 10,
          "mini_batch_size": 100, "factors_lr": 0.01, "linear_lr": 0.01, "factors_init_sigma": 0.01}
    results = {}
    for workers in (1, 2):
        model, reporters = fit(hp, train, tmp_path / f"model{workers}", workers, test)
        out = model.predict(Batch(x_test))
        assert set(out) == {"score", "predicted_label"} and out["score"].dtype == np.float32
        np.testing.assert_array_equal(out["predicted_label"], (out["score"] >= 0.5).astype(np.float32))
        acc, loss = accuracy_score(y_test, out["predicted_label"]), log_loss(y_test, out["score"])
        assert acc > linear_acc + 0.12 and loss < linear_loss - 0.15, (workers, acc, loss, linear_acc,
                                                                       linear_loss)
        # the test: metrics are those of the saved model on the test channel
        for reporter in reporters:
            metrics = reporter.final_metrics
            assert metrics["test:binary_classification_accuracy"] == pytest.approx(acc, abs=1e-9)
            assert metrics["test:binary_classification_cross_entropy"] == pytest.approx(loss, rel=1e-4)
            assert metrics["test:binary_f_beta"] == pytest.approx(f1_score(y_test, out["predicted_label"]))
            per_epoch = [(e, v) for n, v, e in reporter.history
                         if n == "train:binary_classification_accuracy"]
            assert [e for e, _ in per_epoch] == list(range(10))
            assert per_epoch[-1][1] > per_epoch[0][1] + 0.05  # it learns across epochs
        manifest = json.loads((tmp_path / f"model{workers}" / "manifest.json").read_text())
        assert manifest["algorithm"] == NAME and manifest["hyperparameters"]["num_factors"] == "8"
        assert manifest["hyperparameters"]["bias_lr"] == "0.1"  # defaults are recorded too
        results[workers] = (acc, loss)
    assert abs(results[1][0] - results[2][0]) < 0.03 and abs(results[1][1] - results[2][1]) < 0.05


def test_regression_interactions_beat_linear_regression(tmp_path):
    x, signal, rng = interaction_data(6_000, 10, seed=2)
    y = (signal + 0.3 * rng.standard_normal(len(signal))).astype(np.float32)
    x_train, y_train, x_test, y_test = x[:5_000], y[:5_000], x[5_000:], y[5_000:]
    linear = LinearRegression().fit(x_train, y_train)
    linear_rmse = math.sqrt(mean_squared_error(y_test, linear.predict(x_test)))
    train = write_channel(tmp_path / "train", x_train, y_train)
    test = write_channel(tmp_path / "test", x_test, y_test)
    hp = {"feature_dim": 10, "num_factors": 6, "predictor_type": "regressor", "epochs": 12,
          "mini_batch_size": 50, "factors_lr": 0.01, "linear_lr": 0.01, "factors_init_sigma": 0.05}
    for workers in (1, 2):
        model, reporters = fit(hp, train, tmp_path / f"model{workers}", workers, test)
        out = model.predict(Batch(x_test))
        assert set(out) == {"score"}
        rmse = math.sqrt(mean_squared_error(y_test, out["score"]))
        assert rmse < 0.2 * linear_rmse, (workers, rmse, linear_rmse)
        assert reporters[0].final_metrics["test:rmse"] == pytest.approx(rmse, rel=1e-4)
        assert [e for n, _, e in reporters[0].history if n == "train:rmse"] == list(range(12))


def test_breast_cancer_matches_logistic_regression(tmp_path):
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target, test_size=0.3, random_state=0,
                                                        stratify=data.target)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = (scaler.transform(part).astype(np.float32) for part in (x_train, x_test))
    y_train, y_test = y_train.astype(np.float32), y_test.astype(np.float32)
    linear = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    linear_acc = accuracy_score(y_test, linear.predict(x_test))
    linear_loss = log_loss(y_test, linear.predict_proba(x_test)[:, 1])
    train = write_channel(tmp_path / "train", x_train, y_train)
    hp = {"feature_dim": 30, "num_factors": 4, "predictor_type": "binary_classifier", "epochs": 30,
          "mini_batch_size": 20, "linear_lr": 0.01, "factors_lr": 0.001, "bias_lr": 0.01}
    for workers in (1, 2):
        model, _ = fit(hp, train, tmp_path / f"model{workers}", workers)
        out = model.predict(Batch(x_test))
        acc, loss = accuracy_score(y_test, out["predicted_label"]), log_loss(y_test, out["score"])
        assert acc >= linear_acc - 0.03 and loss <= linear_loss + 0.05, (workers, acc, loss, linear_acc,
                                                                          linear_loss)


def test_diabetes_regression_matches_linear_regression(tmp_path):
    data = load_diabetes()
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target, test_size=0.3, random_state=0)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = (scaler.transform(part).astype(np.float32) for part in (x_train, x_test))
    y_train = y_train.astype(np.float32)
    linear = LinearRegression().fit(x_train, y_train)
    linear_rmse = math.sqrt(mean_squared_error(y_test, linear.predict(x_test)))
    train = write_channel(tmp_path / "train", x_train, y_train)
    hp = {"feature_dim": 10, "num_factors": 2, "predictor_type": "regressor", "epochs": 40,
          "mini_batch_size": 10, "bias_init_method": "constant", "bias_init_value": float(y_train.mean()),
          "bias_lr": 0.5, "linear_lr": 0.5, "factors_lr": 0.001, "linear_wd": 0}
    for workers in (1, 2):
        model, _ = fit(hp, train, tmp_path / f"model{workers}", workers)
        rmse = math.sqrt(mean_squared_error(y_test, model.predict(Batch(x_test))["score"]))
        assert rmse <= 1.05 * linear_rmse, (workers, rmse, linear_rmse)


def one_hot_interactions(n: int, seed: int = 5):
    """100k one-hot columns: a user id and an item id scattered over the space, plus a context id.

    The label depends on a latent user-item affinity, which a linear model over one-hot ids cannot express.
    As a dense float32 matrix the training rows alone would take n * 100k * 4 bytes (16 GB for 40k rows).
    """
    rng = np.random.default_rng(seed)
    dim, n_users, n_items, n_contexts = 100_000, 400, 400, 20
    user_ids = rng.choice(50_000, n_users, replace=False)
    item_ids = 50_000 + rng.choice(50_000, n_items, replace=False)
    context_ids = rng.choice(np.setdiff1d(np.arange(dim), np.concatenate([user_ids, item_ids])), n_contexts,
                             replace=False)
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    contexts = rng.integers(0, n_contexts, n)
    a, b = rng.standard_normal((n_users, 3)), rng.standard_normal((n_items, 3))
    logit = 2.0 * (a[users] * b[items]).sum(1) + rng.normal(0, 0.5, n_contexts)[contexts]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cols = np.sort(np.column_stack([user_ids[users], item_ids[items], context_ids[contexts]]), axis=1)
    x = sp.csr_matrix((np.ones(cols.size, np.float32), cols.ravel(), np.arange(0, cols.size + 1, 3)),
                      shape=(n, dim))
    return x, y


def test_sparse_100k_dimensional_one_hot_interactions(tmp_path, monkeypatch):
    x, y = one_hot_interactions(50_000)
    x_train, y_train, x_test, y_test = x[:40_000], y[:40_000], x[40_000:], y[40_000:]
    linear = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    linear_acc = accuracy_score(y_test, linear.predict(x_test))
    train = write_channel(tmp_path / "train", x_train, y_train)
    test = write_channel(tmp_path / "test", x_test, y_test)

    widest = []
    real_prepare = fm_module.prepare

    def spy(batch, *args):
        assert sp.issparse(batch.features), "training batches of sparse records must stay CSR"
        prepared = real_prepare(batch, *args)
        widest.append(prepared.x.shape[1])
        return prepared

    monkeypatch.setattr(fm_module, "prepare", spy)
    hp = {"feature_dim": 100_000, "num_factors": 8, "predictor_type": "binary_classifier", "epochs": 10,
          "mini_batch_size": 200, "factors_lr": 0.01, "linear_lr": 0.01, "factors_init_sigma": 0.1,
          "linear_wd": 0.01}
    for workers in (1, 2):
        widest.clear()
        model, reporters = fit(hp, train, tmp_path / f"model{workers}", workers, test)
        assert model.V.shape == (100_000, 8) and model.w.shape == (100_000,)
        assert 0 < max(widest) <= 3 * 200  # each step works on the batch's columns only, never on 100k
        out = model.predict(Batch(x_test))
        acc = accuracy_score(y_test, out["predicted_label"])
        assert acc > linear_acc + 0.2, (workers, acc, linear_acc)
        assert reporters[0].final_metrics["test:binary_classification_accuracy"] == pytest.approx(acc)


# ------------------------------------------------------------------------------------------- contract edges
def test_model_round_trip_and_bad_artifacts(tmp_path):
    x, signal, _ = interaction_data(400, 6, seed=3)
    train = write_channel(tmp_path / "train", x, signal.astype(np.float32), shards=1)
    model, _ = fit({"feature_dim": 6, "num_factors": 3, "predictor_type": "regressor"}, train, tmp_path / "m")
    arrays = np.load(tmp_path / "m" / "model.npz", allow_pickle=False)
    assert sorted(arrays.files) == ["V", "w", "w0"] and arrays["V"].shape == (6, 3)
    again = fm_module.FactorizationMachinesModel.from_arrays(dict(arrays), model.hyperparameters, 6)
    np.testing.assert_array_equal(again.predict(Batch(x))["score"], model.predict(Batch(x))["score"])
    np.testing.assert_allclose(model.predict(Batch(x))["score"],
                               brute_force_scores(x, model.w0, model.w, model.V), rtol=1e-4, atol=1e-4)
    with pytest.raises(ArtifactError, match="lacks the array"):
        fm_module.FactorizationMachinesModel.from_arrays({"w": arrays["w"]}, model.hyperparameters, 6)
    with pytest.raises(ArtifactError, match="do not match feature_dim 7"):
        fm_module.FactorizationMachinesModel.from_arrays(dict(arrays), model.hyperparameters, 7)
    with pytest.raises(ValueError, match="expects 6 features, got 5"):
        model.predict(Batch(x[:, :5]))


def test_bad_labels_and_dimensions_are_named(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    y = np.zeros(50, np.float32)
    y[17] = 2.0
    train = write_channel(tmp_path / "train", x, y, shards=1)
    hp = {"feature_dim": 4, "num_factors": 2, "predictor_type": "binary_classifier", "mini_batch_size": 10}
    with pytest.raises(ValueError, match=r"record 17 of this worker's train channel has label 2\.0; "
                                         "labels must be 0 or 1"):
        fit(hp, train, tmp_path / "m1")
    with pytest.raises(ValueError, match="feature_dim is 5 but the train channel holds 4 features"):
        fit({**hp, "feature_dim": 5}, train, tmp_path / "m2")
    assert not (tmp_path / "m1" / "manifest.json").exists()
    unlabeled = tmp_path / "unlabeled"
    os.makedirs(unlabeled)
    (unlabeled / "part-00000.pbr").write_bytes(encode_dense(x))
    channel = Channel.open(str(unlabeled))
    with pytest.raises(ValueError, match="train channel has records without labels"):
        fit(hp, channel, tmp_path / "m3")


def test_epoch_cache_gives_the_same_model_as_streaming(tmp_path, monkeypatch):
    x, signal, _ = interaction_data(900, 6, seed=4)
    train = write_channel(tmp_path / "train", x, (signal > 0).astype(np.float32), shards=3)
    hp = {"feature_dim": 6, "num_factors": 2, "predictor_type": "binary_classifier", "epochs": 3,
          "mini_batch_size": 64}
    cached, _ = fit(hp, train, tmp_path / "cached", workers=2)
    monkeypatch.setattr(fm_module, "EPOCH_CACHE_BYTES", 0)
    streamed, _ = fit(hp, train, tmp_path / "streamed", workers=2)
    np.testing.assert_array_equal(cached.V, streamed.V)
    np.testing.assert_array_equal(cached.w, streamed.w)


def test_a_worker_without_shards_still_merges(tmp_path):
    x, signal, _ = interaction_data(300, 6, seed=6)
    train = write_channel(tmp_path / "train", x, signal.astype(np.float32), shards=1)
    hp = {"feature_dim": 6, "num_factors": 2, "predictor_type": "regressor", "epochs": 2,
          "mini_batch_size": 50}
    one, _ = fit(hp, train, tmp_path / "one", workers=1)
    two, _ = fit(hp, train, tmp_path / "two", workers=2)  # rank 1 gets no shard: its model must not count
    np.testing.assert_allclose(two.V, one.V, rtol=1e-6)
    assert two.w0 == pytest.approx(one.w0)


def test_test_metrics_cover_the_whole_test_channel(tmp_path):
    """A sharded test channel's sums are reduced across workers; a FullyReplicated one is whole on each."""
    x, signal, _ = interaction_data(600, 6, seed=8)
    y = (signal > 0).astype(np.float32)
    train = write_channel(tmp_path / "train", x[:400], y[:400])
    test = write_channel(tmp_path / "test", x[400:], y[400:], shards=3)
    hp = {"feature_dim": 6, "num_factors": 3, "predictor_type": "binary_classifier", "mini_batch_size": 32}
    for name, channel in (("sharded", test), ("replicated", test.with_distribution("FullyReplicated"))):
        model, reporters = fit(hp, train, tmp_path / name, workers=2, test=channel)
        out = model.predict(Batch(x[400:]))
        for reporter in reporters:
            metrics = reporter.final_metrics
            assert metrics["test:binary_classification_accuracy"] == pytest.approx(
                accuracy_score(y[400:], out["predicted_label"]))
            assert metrics["test:binary_classification_cross_entropy"] == pytest.approx(
                log_loss(y[400:], out["score"]), rel=1e-4)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_sparse_batch_of_empty_rows_moves_only_the_bias(backend):
    cfg = config(feature_dim=5, num_factors=2, predictor_type="binary_classifier")
    state = initial_state(cfg)
    ops = NumpyFMOps() if backend == "numpy" else TorchFMOps("cpu")
    trainer = FMTrainer(cfg, {k: v.copy() for k, v in state.items()}, ops)
    empty = sp.csr_matrix((3, 5), dtype=np.float32)
    trainer.step(prepare(Batch(empty, np.array([1, 1, 0], np.float32)), cfg, "train", 0))
    out = trainer.export()
    assert (out["theta"] == state["theta"]).all() and out["w0"][0] > state["w0"][0]
    assert out["rows"][0] == 3 and out["counts"].sum() == 0

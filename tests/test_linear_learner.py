"""Linear Learner against scikit-learn on its bundled real datasets, through real channel files.

Every training run writes recordIO-protobuf shards plus ``manifest.json``, runs the algorithm under
the training contract (``run_builtin``) with one or two thread workers, and loads the saved artifact
to predict. Comparisons use a held-out test split that training never sees.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import special
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from algorithms import builtin
from algorithms.backend import ENV as BACKEND_ENV
from algorithms.batch import Batch
from algorithms.builtin import load_model, run_builtin
from algorithms.builtin.linear_learner import algorithm as linear_learner
from algorithms.builtin.linear_learner import kernels, losses
from algorithms.builtin.linear_learner.grid import build_grid
from algorithms.builtin.linear_learner.metrics import (
    BINS,
    MarginHistogram,
    best_edges,
    criterion_curves,
    edge_margin,
)
from algorithms.channel import RECORDIO_PROTOBUF, Channel, Manifest, Shard
from algorithms.hyperparameters import HyperparameterError
from algorithms.tensor_codec import encode_dense, encode_sparse
from algorithms.training import ChannelInput, Reporter, ThreadGroup, TrainingEnv

LL = builtin.get("linear-learner")


# ------------------------------------------------------------------------------------------- helpers


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, float, int | None]] = []
        self.lines: list[str] = []

    def metric(self, name, value, epoch=None, step=None):
        super().metric(name, value, epoch, step)
        self.records.append((name, float(value), epoch))

    def log(self, message):
        self.lines.append(message)


def write_channel(path, x, y, shards: int = 2) -> Channel:
    """``part-*.pbr`` shards (dense or CSR features, float32) plus ``manifest.json``."""
    os.makedirs(path, exist_ok=True)
    entries = []
    for i, idx in enumerate(np.array_split(np.arange(x.shape[0]), shards)):
        name = f"part-{i:05d}.pbr"
        labels = np.asarray(y[idx], dtype=np.float32)
        if sp.issparse(x):
            data = encode_sparse(sp.csr_matrix(x[idx], dtype=np.float32), labels)
        else:
            data = encode_dense(np.asarray(x[idx], dtype=np.float32), labels)
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
        entries.append(Shard(name, len(idx), len(data)))
    manifest = Manifest(
        RECORDIO_PROTOBUF, tuple(entries), feature_dim=x.shape[1], has_label=True, sparse=sp.issparse(x)
    )
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write(manifest.to_json())
    return Channel.open(str(path))


def fit(tmp_path, hyperparameters, train, validation=None, test=None, workers=1, name="model"):
    """Train with ``workers`` thread workers (train shards dealt round-robin); the loaded model and rank 0's
    reporter."""
    model_dir = str(tmp_path / name)
    reporters = [RecordingReporter() for _ in range(workers)]

    def work(rank, collectives):
        channels = {"train": ChannelInput.from_channel("train", train, train.shards()[rank::workers])}
        for cname, channel in (("validation", validation), ("test", test)):
            if channel is not None:
                channels[cname] = ChannelInput.from_channel(cname, channel.with_distribution("FullyReplicated"))
        env = TrainingEnv({k: str(v) for k, v in hyperparameters.items()}, channels, model_dir, rank=rank,
                          hosts=[f"algo-{i + 1}" for i in range(workers)], collectives=collectives,
                          reporter=reporters[rank])
        run_builtin("linear-learner", env)

    ThreadGroup(workers, timeout=120).run(work)
    return load_model(model_dir), reporters[0]


def split(loader, stratify=True, seed=0):
    x, y = loader(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y if stratify else None)


def predict(model, x):
    return model.predict(Batch(np.asarray(x, dtype=np.float32)))


@pytest.fixture(scope="module")
def cancer():
    return split(load_breast_cancer)


@pytest.fixture(scope="module")
def cancer_reference(cancer):
    x_train, x_test, y_train, y_test = cancer
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_train, y_train)
    pred = ref.predict(x_test)
    return skm.accuracy_score(y_test, pred), skm.f1_score(y_test, pred)


# ------------------------------------------------------------------------ quality against scikit-learn


@pytest.mark.parametrize("workers", [1, 2])
def test_binary_breast_cancer_matches_logistic_regression(tmp_path, cancer, cancer_reference, workers):
    # Validation is the training data itself: SageMaker's documented behaviour without a validation set.
    x_train, x_test, y_train, y_test = cancer
    train = write_channel(tmp_path / "train", x_train, y_train, shards=4)
    model, _ = fit(
        tmp_path,
        {"predictor_type": "binary_classifier", "mini_batch_size": 32, "epochs": 40},
        train,
        validation=train,
        workers=workers,
    )
    out = predict(model, x_test)
    accuracy = skm.accuracy_score(y_test, out["predicted_label"])
    f1 = skm.f1_score(y_test, out["predicted_label"])
    ref_accuracy, ref_f1 = cancer_reference
    assert accuracy >= ref_accuracy - 0.02
    assert f1 >= ref_f1 - 0.02


@pytest.mark.parametrize("workers", [1, 2])
def test_binary_without_validation_selects_on_held_out_rows(tmp_path, cancer, cancer_reference, workers):
    x_train, x_test, y_train, y_test = cancer
    train = write_channel(tmp_path / "train", x_train, y_train, shards=4)
    model, reporter = fit(
        tmp_path,
        {"predictor_type": "binary_classifier", "mini_batch_size": 32, "epochs": 40},
        train,
        workers=workers,
    )
    assert any("held-out train rows" in line for line in reporter.lines)
    out = predict(model, x_test)
    ref_accuracy, ref_f1 = cancer_reference
    assert skm.accuracy_score(y_test, out["predicted_label"]) >= ref_accuracy - 0.02
    assert skm.f1_score(y_test, out["predicted_label"]) >= ref_f1 - 0.02


@pytest.mark.parametrize("workers", [1, 2])
def test_regressor_diabetes_matches_linear_regression(tmp_path, workers):
    x_train, x_test, y_train, y_test = split(load_diabetes, stratify=False)
    ref_rmse = math.sqrt(
        skm.mean_squared_error(y_test, LinearRegression().fit(x_train, y_train).predict(x_test))
    )
    train = write_channel(tmp_path / "train", x_train, y_train, shards=4)
    model, _ = fit(
        tmp_path,
        {"predictor_type": "regressor", "mini_batch_size": 32, "epochs": 40},
        train,
        validation=train,
        workers=workers,
    )
    rmse = math.sqrt(skm.mean_squared_error(y_test, predict(model, x_test)["score"]))
    assert rmse <= ref_rmse * 1.05


@pytest.mark.parametrize("loader", [load_digits, load_wine], ids=["digits", "wine"])
@pytest.mark.parametrize("workers", [1, 2])
def test_multiclass_matches_logistic_regression(tmp_path, loader, workers):
    x_train, x_test, y_train, y_test = split(loader)
    classes = int(y_train.max()) + 1
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_train, y_train)
    ref_accuracy = skm.accuracy_score(y_test, ref.predict(x_test))
    train = write_channel(tmp_path / "train", x_train, y_train, shards=4)
    model, _ = fit(
        tmp_path,
        {
            "predictor_type": "multiclass_classifier",
            "num_classes": classes,
            "mini_batch_size": 32,
            "epochs": 30,
        },
        train,
        workers=workers,
    )
    out = predict(model, x_test)
    assert out["score"].shape == (len(x_test), classes)
    assert skm.accuracy_score(y_test, out["predicted_label"]) >= ref_accuracy - 0.03


def test_two_workers_agree_with_one(tmp_path, cancer):
    x_train, x_test, y_train, y_test = cancer
    train = write_channel(tmp_path / "train", x_train, y_train, shards=4)
    hp = {"predictor_type": "binary_classifier", "mini_batch_size": 32, "epochs": 30}
    one, _ = fit(tmp_path, hp, train, workers=1, name="one")
    two, _ = fit(tmp_path, hp, train, workers=2, name="two")
    l1, l2 = predict(one, x_test)["predicted_label"], predict(two, x_test)["predicted_label"]
    assert abs(skm.accuracy_score(y_test, l1) - skm.accuracy_score(y_test, l2)) <= 0.02
    assert abs(skm.f1_score(y_test, l1) - skm.f1_score(y_test, l2)) <= 0.02


# -------------------------------------------------------------------------------- responses and model


def test_binary_response_shapes_and_coefficients(tmp_path, cancer):
    x_train, x_test, y_train, _ = cancer
    train = write_channel(tmp_path / "train", x_train, y_train)
    model, _ = fit(
        tmp_path, {"predictor_type": "binary_classifier", "mini_batch_size": 64, "epochs": 5}, train
    )
    assert model.output_names() == ["score", "predicted_label"]
    out = predict(model, x_test)
    assert out["score"].dtype == np.float32 and out["score"].shape == (len(x_test),)
    # The score is P(label = 1) of the raw-feature linear model the artifact exposes.
    margin = x_test @ model.coefficients.astype(np.float64) + model.intercept
    np.testing.assert_allclose(out["score"], 1 / (1 + np.exp(-margin)), rtol=1e-4, atol=1e-6)
    assert set(np.unique(out["predicted_label"])) <= {0.0, 1.0}
    np.testing.assert_array_equal(
        out["predicted_label"], (out["score"] >= model.threshold).astype(np.float32)
    )
    assert model.coefficients.shape == (x_train.shape[1],)
    assert 0.0 < model.threshold < 1.0
    assert model.selected["model"] >= 0 and "learning_rate" in model.selected


def test_regressor_recovers_known_coefficients(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, [1, 10, 0.1, 3, 2], size=(4000, 5))
    w = np.array([2.0, -0.3, 40.0, 1.5, 0.0])
    y = x @ w + 7.0
    train = write_channel(tmp_path / "train", x, y)
    model, _ = fit(tmp_path, {"predictor_type": "regressor", "epochs": 30, "mini_batch_size": 100}, train)
    assert model.output_names() == ["score"]
    np.testing.assert_allclose(model.coefficients, w, atol=0.02)
    assert abs(model.intercept - 7.0) < 0.5
    assert set(predict(model, x[:3])) == {"score"}


def test_label_normalization_is_scale_equivariant(tmp_path):
    x_train, x_test, y_train, _ = split(load_diabetes, stratify=False)
    hp = {"predictor_type": "regressor", "mini_batch_size": 32, "epochs": 10, "num_models": 4}
    base, _ = fit(tmp_path, hp, write_channel(tmp_path / "a", x_train, y_train), name="a")
    scaled, _ = fit(tmp_path, hp, write_channel(tmp_path / "b", x_train, 1000 * y_train + 5), name="b")
    np.testing.assert_allclose(
        predict(scaled, x_test)["score"], 1000 * predict(base, x_test)["score"] + 5, rtol=2e-3
    )


def test_multiclass_response_is_a_probability_vector(tmp_path):
    x_train, x_test, y_train, _ = split(load_wine)
    train = write_channel(tmp_path / "train", x_train, y_train)
    model, _ = fit(
        tmp_path,
        {"predictor_type": "multiclass_classifier", "num_classes": 3, "mini_batch_size": 16, "epochs": 5},
        train,
    )
    out = predict(model, x_test)
    assert model.output_names() == ["score", "predicted_label"]
    np.testing.assert_allclose(out["score"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["predicted_label"], out["score"].argmax(axis=1).astype(np.float32))
    assert model.coefficients.shape == (x_train.shape[1], 3) and model.intercept.shape == (3,)
    assert model.threshold is None


def test_saved_artifact_round_trips_without_pickle(tmp_path, cancer):
    x_train, x_test, y_train, _ = cancer
    train = write_channel(tmp_path / "train", x_train, y_train)
    model, _ = fit(tmp_path, {"predictor_type": "binary_classifier", "epochs": 2}, train)
    with np.load(tmp_path / "model" / "model.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["coefficients"][:, 0], model.coefficients)
        assert float(z["threshold"]) == pytest.approx(model.threshold)
    again = load_model(str(tmp_path / "model"))
    np.testing.assert_array_equal(predict(again, x_test)["score"], predict(model, x_test)["score"])
    assert again.hyperparameters["loss"] == "logistic"


# ---------------------------------------------------------------------------------------- metrics


def test_reported_binary_metrics_match_scikit_learn(tmp_path, cancer):
    x_train, x_test, y_train, y_test = cancer
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.3, random_state=2, stratify=y_train
    )
    model, reporter = fit(
        tmp_path,
        {"predictor_type": "binary_classifier", "mini_batch_size": 32, "epochs": 8, "f_beta": 2.0},
        write_channel(tmp_path / "train", x_fit, y_fit),
        write_channel(tmp_path / "val", x_val, y_val, shards=1),
        write_channel(tmp_path / "test", x_test, y_test, shards=1),
    )
    epochs = [e for name, _, e in reporter.records if name == "validation:objective_loss" and e is not None]
    assert epochs == list(range(len(epochs))) and epochs
    assert [e for name, _, e in reporter.records if name == "train:objective_loss"] == epochs
    per_epoch = [
        v
        for name, v, e in reporter.records
        if name == "validation:binary_classification_accuracy" and e is not None
    ]
    assert len(per_epoch) == len(epochs) and all(0.5 < v <= 1 for v in per_epoch)
    for prefix, x, y in (("validation", x_val, y_val), ("test", x_test, y_test)):
        out = predict(model, x)
        label, score = out["predicted_label"], out["score"]
        m = reporter.final_metrics
        assert m[f"{prefix}:binary_classification_accuracy"] == pytest.approx(skm.accuracy_score(y, label))
        assert m[f"{prefix}:precision"] == pytest.approx(skm.precision_score(y, label))
        assert m[f"{prefix}:recall"] == pytest.approx(skm.recall_score(y, label))
        assert m[f"{prefix}:binary_f_beta"] == pytest.approx(skm.fbeta_score(y, label, beta=2.0))
        assert m[f"{prefix}:roc_auc_score"] == pytest.approx(skm.roc_auc_score(y, score), abs=2e-3)
        probability = special.expit(model.decision_function(Batch(x))[:, 0])  # float64: no clipping
        assert m[f"{prefix}:objective_loss"] == pytest.approx(skm.log_loss(y, probability), rel=1e-6)
    assert model.metrics == reporter.final_metrics


def test_reported_multiclass_metrics_match_scikit_learn(tmp_path):
    x_train, x_test, y_train, y_test = split(load_digits)
    model, reporter = fit(
        tmp_path,
        {
            "predictor_type": "multiclass_classifier",
            "num_classes": 10,
            "mini_batch_size": 64,
            "epochs": 3,
            "accuracy_top_k": 2,
        },
        train := write_channel(tmp_path / "train", x_train, y_train),
        validation=train,
        test=write_channel(tmp_path / "test", x_test, y_test, shards=1),
    )
    per_epoch = [
        e for name, _, e in reporter.records if name == "validation:multiclass_accuracy" and e is not None
    ]
    assert per_epoch == [0, 1, 2]
    out = predict(model, x_test)
    m = reporter.final_metrics
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_test, out["predicted_label"], average="macro", zero_division=0
    )
    assert m["test:multiclass_accuracy"] == pytest.approx(skm.accuracy_score(y_test, out["predicted_label"]))
    assert m["test:multiclass_top_k_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(y_test, out["score"], k=2, labels=np.arange(10)), abs=1e-9
    )
    assert m["test:macro_precision"] == pytest.approx(precision)
    assert m["test:macro_recall"] == pytest.approx(recall)
    assert m["test:macro_f_beta"] == pytest.approx(f1)
    probabilities = special.softmax(model.decision_function(Batch(x_test)), axis=1)  # float64: no clipping
    assert m["test:objective_loss"] == pytest.approx(
        skm.log_loss(y_test, probabilities, labels=np.arange(10)), rel=1e-6
    )
    rank = (out["score"] > out["score"][np.arange(len(y_test)), y_test][:, None]).sum(axis=1)
    assert m["test:dcg"] == pytest.approx(np.mean(1 / np.log2(rank + 2)), rel=1e-6)


def test_reported_regression_metrics_match_scikit_learn(tmp_path):
    x_train, x_test, y_train, y_test = split(load_diabetes, stratify=False)
    model, reporter = fit(
        tmp_path,
        {"predictor_type": "regressor", "mini_batch_size": 32, "epochs": 5},
        write_channel(tmp_path / "train", x_train, y_train),
        write_channel(tmp_path / "val", x_test, y_test, shards=1),
    )
    score = predict(model, x_test)["score"]
    m = reporter.final_metrics
    assert m["validation:mse"] == pytest.approx(skm.mean_squared_error(y_test, score), rel=1e-4)
    assert m["validation:rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y_test, score)), rel=1e-4)
    assert m["validation:absolute_loss"] == pytest.approx(skm.mean_absolute_error(y_test, score), rel=1e-4)
    assert m["validation:objective_loss"] == pytest.approx(m["validation:mse"], rel=1e-9)
    per_epoch = {
        (name, e): v for name, v, e in reporter.records if e is not None and name.startswith("validation:")
    }
    assert {name for name, _ in per_epoch} == {
        "validation:objective_loss",
        "validation:mse",
        "validation:rmse",
    }
    for (name, e), v in per_epoch.items():
        if name == "validation:rmse":
            assert v == pytest.approx(math.sqrt(per_epoch[("validation:mse", e)]))
            assert per_epoch[("validation:mse", e)] == pytest.approx(
                per_epoch[("validation:objective_loss", e)], rel=1e-4
            )


# ------------------------------------------------------------------------ selection and calibration


@pytest.mark.parametrize(
    "criterion,target,check",
    [
        ("precision_at_target_recall", {"target_recall": 0.97}, ("recall", 0.97)),
        ("recall_at_target_precision", {"target_precision": 0.99}, ("precision", 0.99)),
    ],
)
def test_threshold_meets_the_target_on_validation(tmp_path, cancer, criterion, target, check):
    x_train, _, y_train, _ = cancer
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.4, random_state=4, stratify=y_train
    )
    model, reporter = fit(
        tmp_path,
        {
            "predictor_type": "binary_classifier",
            "mini_batch_size": 32,
            "epochs": 10,
            "binary_classifier_model_selection_criteria": criterion,
            **target,
        },
        write_channel(tmp_path / "train", x_fit, y_fit),
        write_channel(tmp_path / "val", x_val, y_val, shards=1),
    )
    metric, floor = check
    assert reporter.final_metrics[f"validation:{metric}"] >= floor
    label = predict(model, x_val)["predicted_label"]
    scorer = skm.recall_score if metric == "recall" else skm.precision_score
    assert scorer(y_val, label) >= floor


def test_accuracy_threshold_is_at_least_as_good_as_one_half(tmp_path, cancer):
    x_train, _, y_train, _ = cancer
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.4, random_state=5, stratify=y_train
    )
    model, _ = fit(
        tmp_path,
        {"predictor_type": "binary_classifier", "mini_batch_size": 32, "epochs": 6},
        write_channel(tmp_path / "train", x_fit, y_fit),
        write_channel(tmp_path / "val", x_val, y_val, shards=1),
    )
    out = predict(model, x_val)
    assert skm.accuracy_score(y_val, out["predicted_label"]) >= skm.accuracy_score(y_val, out["score"] >= 0.5)


def test_histogram_calibration_matches_brute_force():
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.3).astype(float)
    margins = np.stack([rng.normal(2 * y - 1, s) for s in (0.5, 1.0, 3.0)], axis=1)
    hist = MarginHistogram(3)
    hist.add(margins[:1000], y[:1000])
    hist.add(margins[1000:], y[1000:])
    best, edges = best_edges(criterion_curves(hist, "accuracy", 1.0, 0.8, 0.8))
    for m in range(3):
        thresholds = np.unique(margins[:, m])
        brute = max(np.mean((margins[:, m] >= t) == (y > 0.5)) for t in thresholds)
        assert best[m] == pytest.approx(brute, abs=1.5 / len(y))  # bins may merge a tie or two
        assert np.mean((margins[:, m] >= edge_margin(int(edges[m]))) == (y > 0.5)) == pytest.approx(best[m])
    assert edge_margin(BINS // 2) == 0.0 and edge_margin(0) == -math.inf and edge_margin(BINS) == math.inf


def test_early_stopping_stops_when_the_loss_stalls(tmp_path, cancer):
    x_train, _, y_train, _ = cancer
    _, reporter = fit(
        tmp_path,
        {
            "predictor_type": "binary_classifier",
            "epochs": 20,
            "mini_batch_size": 32,
            "early_stopping_patience": 2,
            "early_stopping_tolerance": 0.5,
        },
        write_channel(tmp_path / "train", x_train, y_train),
    )
    epochs = [e for name, _, e in reporter.records if name == "train:objective_loss"]
    assert len(epochs) < 20
    assert any("early stopping" in line for line in reporter.lines)


def test_successive_halving_narrows_training_and_still_selects_well(tmp_path, cancer, cancer_reference):
    x_train, x_test, y_train, y_test = cancer
    model, reporter = fit(
        tmp_path,
        {"predictor_type": "binary_classifier", "epochs": 9, "mini_batch_size": 32},
        write_channel(tmp_path / "train", x_train, y_train),
    )
    import json

    kept = [json.loads(line.rsplit(": ", 1)[1]) for line in reporter.lines if "models keep training" in line]
    assert [len(k) for k in kept] == [16, 8, 4]  # after epochs 1, 2 and 4 (0-based 0, 1, 3); never below 4
    assert all(set(later) <= set(earlier) for earlier, later in zip([range(32), *kept], kept, strict=False))
    losses = [(e, v) for name, v, e in reporter.records if name == "train:objective_loss"]
    assert [e for e, _ in losses] == list(range(9))  # halving does not stop training early
    accuracy = skm.accuracy_score(y_test, predict(model, x_test)["predicted_label"])
    assert accuracy >= cancer_reference[0] - 0.02


def test_models_left_out_of_training_keep_their_columns_exactly(tmp_path, cancer):
    import copy

    x_train, _, y_train, _ = cancer
    channel = ChannelInput.from_channel("train", write_channel(tmp_path / "train", x_train, y_train))
    env = TrainingEnv(
        {"predictor_type": "binary_classifier", "num_models": "8", "l1": "0.001", "wd": "0.01",
         "positive_example_weight_mult": "auto", "optimizer": "rmsprop", "momentum": "0.5"},
        {"train": channel},
        str(tmp_path / "model"),
    )
    full = LL(env)._setup()
    batches = list(channel.batches(40))

    def run(ens, part):
        for batch in part:
            ens.step(ens.ops.asarray(batch.features), ens.labels(batch.labels))

    run(full, batches[:5])
    part = copy.deepcopy(full)
    part.keep([6, 1, 4])
    assert part.models.tolist() == [1, 4, 6] and part.live == 3 and part.W.shape == (x_train.shape[1], 3)
    full.reset_epoch_stats()
    part.reset_epoch_stats()
    run(full, batches[5:])
    run(part, batches[5:])
    cols = [1, 4, 6]
    np.testing.assert_allclose(part.W, full.W[:, cols], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(part.b, full.b[cols], rtol=1e-5, atol=1e-7)
    for name in full.slots:
        np.testing.assert_allclose(part.slots[name], full.slots[name][..., cols], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(part.loss_sum, full.loss_sum[cols], rtol=1e-5)
    W, b = part.copy_models(np.zeros_like(full.W), np.zeros_like(full.b), np.array([4]))
    np.testing.assert_array_equal(W[:, 4], part.W[:, 1])
    assert not W[:, [0, 1, 2, 3, 5, 6, 7]].any() and b[4] == part.b[1]
    with pytest.raises(ValueError, match="still in training"):
        part.keep([0, 1])


# ---------------------------------------------------------------------------------- hyperparameters


def test_every_sagemaker_hyperparameter_is_declared_with_its_default():
    sagemaker_names = {
        "predictor_type",
        "num_classes",
        "feature_dim",
        "epochs",
        "mini_batch_size",
        "loss",
        "optimizer",
        "learning_rate",
        "wd",
        "l1",
        "momentum",
        "beta_1",
        "beta_2",
        "bias_lr_mult",
        "bias_wd_mult",
        "use_lr_scheduler",
        "lr_scheduler_step",
        "lr_scheduler_factor",
        "lr_scheduler_minimum_lr",
        "use_bias",
        "init_method",
        "init_scale",
        "init_sigma",
        "init_bias",
        "normalize_data",
        "normalize_label",
        "unbias_data",
        "unbias_label",
        "num_point_for_scaler",
        "num_models",
        "num_calibration_samples",
        "binary_classifier_model_selection_criteria",
        "target_recall",
        "target_precision",
        "f_beta",
        "positive_example_weight_mult",
        "early_stopping_patience",
        "early_stopping_tolerance",
        "margin",
        "quantile",
        "loss_insensitivity",
        "huber_delta",
        "accuracy_top_k",
        "balance_multiclass_weights",
    }
    assert set(LL.hyperparameters.names()) == sagemaker_names
    hp = LL.validate({"predictor_type": "regressor"})
    expected = {
        "epochs": 15,
        "mini_batch_size": 1000,
        "optimizer": "auto",
        "loss": "squared_loss",
        "use_bias": True,
        "init_method": "uniform",
        "init_scale": 0.07,
        "init_sigma": 0.01,
        "num_point_for_scaler": 10000,
        "num_models": "auto",
        "target_recall": 0.8,
        "target_precision": 0.8,
        "f_beta": 1.0,
        "positive_example_weight_mult": 1.0,
        "early_stopping_patience": 3,
        "early_stopping_tolerance": 0.001,
        "margin": 1.0,
        "quantile": 0.5,
        "loss_insensitivity": 0.01,
        "huber_delta": 1.0,
        "accuracy_top_k": 3,
        "balance_multiclass_weights": False,
        "binary_classifier_model_selection_criteria": "accuracy",
        "normalize_data": True,
        "normalize_label": "auto",
        "learning_rate": "auto",
        "wd": "auto",
    }
    assert {k: hp[k] for k in expected} == expected


@pytest.mark.parametrize(
    "raw,name,fragment",
    [
        ({}, "predictor_type", "required"),
        ({"predictor_type": "ranker"}, "predictor_type", "binary_classifier"),
        ({"predictor_type": "multiclass_classifier"}, "num_classes", "required"),
        ({"predictor_type": "multiclass_classifier", "num_classes": "2"}, "num_classes", "[3, 1000000]"),
        ({"predictor_type": "binary_classifier", "num_classes": "0"}, "num_classes", "[1, 1000000]"),
        ({"predictor_type": "regressor", "loss": "hinge_loss"}, "loss", "squared_loss"),
        ({"predictor_type": "binary_classifier", "loss": "softmax_loss"}, "loss", "logistic"),
        ({"predictor_type": "regressor", "momentum": "1"}, "momentum", "[0, 1)"),
        ({"predictor_type": "regressor", "learning_rate": "0"}, "learning_rate", "(0, inf)"),
        ({"predictor_type": "regressor", "target_recall": "1.0"}, "target_recall", "(0, 1)"),
        ({"predictor_type": "regressor", "quantile": "0"}, "quantile", "(0, 1)"),
        ({"predictor_type": "regressor", "epochs": "0"}, "epochs", "[1, inf)"),
        ({"predictor_type": "regressor", "mini_batch_size": "ten"}, "mini_batch_size", "integer"),
        (
            {"predictor_type": "binary_classifier", "positive_example_weight_mult": "-2"},
            "positive_example_weight_mult",
            "balanced",
        ),
        (
            {"predictor_type": "binary_classifier", "binary_classifier_model_selection_criteria": "auc"},
            "binary_classifier_model_selection_criteria",
            "precision_at_target_recall",
        ),
        ({"predictor_type": "regressor", "loss": "huber_loss", "huber_delta": "0"}, "huber_delta", "> 0"),
        ({"predictor_type": "regressor", "step_size": "1"}, "step_size", "not a hyperparameter"),
    ],
)
def test_bad_hyperparameters_fail_before_training_naming_the_parameter(raw, name, fragment):
    with pytest.raises(HyperparameterError) as info:
        LL.validate(raw)
    assert info.value.name == name
    assert fragment in str(info.value)


def test_auto_values_resolve():
    from algorithms.builtin.linear_learner.params import linear_config as resolve

    c = resolve(
        LL.validate(
            {
                "predictor_type": "binary_classifier",
                "positive_example_weight_mult": "balanced",
                "binary_classifier_model_selection_criteria": "f1",
                "f_beta": "3",
            }
        ),
        20,
    )
    assert (c.optimizer, c.loss, c.num_models, c.unbias_data, c.normalize_label, c.f_beta) == (
        "adam",
        "logistic",
        32,
        True,
        False,
        1.0,
    )
    assert c.selection_criteria == "f_beta" and c.positive_example_weight_mult == "balanced"
    r = resolve(LL.validate({"predictor_type": "regressor", "use_bias": "false"}), 20)
    assert (r.normalize_label, r.unbias_label, r.unbias_data) == (True, False, False)
    big = resolve(LL.validate({"predictor_type": "multiclass_classifier", "num_classes": "1000"}), 100_000)
    assert big.num_models == 1
    assert resolve(LL.validate({"predictor_type": "regressor", "num_models": "5"}), 20).num_models == 5


def test_grid_trains_the_configured_model_and_close_ones():
    grid = build_grid(32, 0.02, 0.001, 0.0, 1.0)
    assert grid.describe(0) == {
        "learning_rate": 0.02,
        "wd": 0.001,
        "l1": 0.0,
        "positive_example_weight_mult": 1.0,
    }
    assert sorted(set(np.round(grid.learning_rate / 0.02, 6))) == [0.316228, 1.0, 3.162278, 10.0]
    assert len({(w, v) for w, v in zip(grid.wd, grid.l1, strict=True)}) == 8
    assert len({(a, w, v) for a, w, v in zip(grid.learning_rate, grid.wd, grid.l1, strict=True)}) == 32
    auto = build_grid(6, 0.01, 0.0, 0.0, "auto", balanced_weight=4.0)
    assert set(auto.positive_weight) == {1.0, 4.0, 2.0}
    assert build_grid(1, 0.5, 0.1, 0.2, 3.0).describe(0) == {
        "learning_rate": 0.5,
        "wd": 0.1,
        "l1": 0.2,
        "positive_example_weight_mult": 3.0,
    }


def test_bad_labels_are_named(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3))
    train = write_channel(tmp_path / "train", x, np.r_[np.zeros(49), 2.0], shards=1)
    with pytest.raises(ValueError, match=r"label 2\.0.*0 or 1"):
        fit(tmp_path, {"predictor_type": "binary_classifier", "epochs": 1}, train)
    train3 = write_channel(tmp_path / "train3", x, np.r_[np.zeros(49), 3.0], shards=1)
    with pytest.raises(ValueError, match=r"integer in \[0, 2\]"):
        fit(tmp_path, {"predictor_type": "multiclass_classifier", "num_classes": 3, "epochs": 1}, train3)


# ------------------------------------------------------------------------- training options and paths


@pytest.mark.parametrize(
    "loss",
    [
        "squared_loss",
        "absolute_loss",
        "eps_insensitive_squared_loss",
        "eps_insensitive_absolute_loss",
        "huber_loss",
        "quantile_loss",
    ],
)
def test_regression_losses_train(tmp_path, loss):
    x_train, x_test, y_train, y_test = split(load_diabetes, stratify=False)
    ref_rmse = math.sqrt(
        skm.mean_squared_error(y_test, LinearRegression().fit(x_train, y_train).predict(x_test))
    )
    model, reporter = fit(
        tmp_path,
        {
            "predictor_type": "regressor",
            "loss": loss,
            "mini_batch_size": 32,
            "epochs": 20,
            "huber_delta": 30,
            "loss_insensitivity": 5,
        },
        write_channel(tmp_path / "train", x_train, y_train),
        test=write_channel(tmp_path / "test", x_test, y_test, shards=1),
    )
    assert reporter.final_metrics["test:rmse"] <= ref_rmse * 1.15
    assert model.hyperparameters["loss"] == loss


def test_quantile_loss_learns_the_quantile(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6000, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.exponential(2.0, size=6000)
    model, _ = fit(
        tmp_path,
        {
            "predictor_type": "regressor",
            "loss": "quantile_loss",
            "quantile": 0.9,
            "num_models": 1,
            "mini_batch_size": 100,
            "epochs": 15,
        },
        write_channel(tmp_path / "train", x, y),
    )
    below = np.mean(y <= predict(model, x)["score"])
    assert below == pytest.approx(0.9, abs=0.02)


def test_hinge_loss_scores_are_margins(tmp_path, cancer, cancer_reference):
    x_train, x_test, y_train, y_test = cancer
    model, _ = fit(
        tmp_path,
        {"predictor_type": "binary_classifier", "loss": "hinge_loss", "mini_batch_size": 32, "epochs": 20},
        write_channel(tmp_path / "train", x_train, y_train),
    )
    out = predict(model, x_test)
    np.testing.assert_allclose(
        out["score"], x_test @ model.coefficients.astype(np.float64) + model.intercept, rtol=1e-4, atol=1e-4
    )
    assert out["score"].min() < 0 < out["score"].max()
    assert skm.accuracy_score(y_test, out["predicted_label"]) >= cancer_reference[0] - 0.03


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_other_optimizers_train(tmp_path, cancer, cancer_reference, optimizer):
    x_train, x_test, y_train, y_test = cancer
    model, _ = fit(
        tmp_path,
        {"predictor_type": "binary_classifier", "optimizer": optimizer, "mini_batch_size": 32, "epochs": 20},
        write_channel(tmp_path / "train", x_train, y_train),
    )
    assert skm.accuracy_score(y_test, predict(model, x_test)["predicted_label"]) >= cancer_reference[0] - 0.03


def test_l1_gives_exact_zeros_and_no_bias_gives_zero_intercept(tmp_path, cancer):
    x_train, _, y_train, _ = cancer
    train = write_channel(tmp_path / "train", x_train, y_train)
    hp = {"predictor_type": "binary_classifier", "num_models": 1, "mini_batch_size": 32, "epochs": 10}
    dense, _ = fit(tmp_path, hp, train, name="dense")
    lasso, _ = fit(tmp_path, {**hp, "l1": 0.02}, train, name="l1")
    assert np.sum(dense.coefficients == 0) == 0
    assert np.sum(lasso.coefficients == 0) >= 3
    no_bias, _ = fit(
        tmp_path,
        {"predictor_type": "binary_classifier", "use_bias": "false", "epochs": 3},
        train,
        name="nobias",
    )
    assert no_bias.intercept == 0.0


def test_positive_example_weight_shifts_the_log_odds(tmp_path):
    # Weighting positives by w is, for a well-specified logistic model, the same as adding log(w) to the
    # intercept: the weighted optimum has odds w times the true odds.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20_000, 2))
    y = (rng.random(20_000) < special.expit(x @ np.array([1.5, -1.0]) - 0.5)).astype(float)
    train = write_channel(tmp_path / "train", x, y)
    hp = {
        "predictor_type": "binary_classifier",
        "num_models": 1,
        "mini_batch_size": 200,
        "epochs": 10,
        "binary_classifier_model_selection_criteria": "loss_function",
    }
    plain, _ = fit(tmp_path, hp, train, name="plain")
    heavy, _ = fit(tmp_path, {**hp, "positive_example_weight_mult": 4}, train, name="heavy")
    assert plain.intercept == pytest.approx(-0.5, abs=0.1)
    assert heavy.intercept - plain.intercept == pytest.approx(math.log(4), abs=0.1)
    np.testing.assert_allclose(heavy.coefficients, plain.coefficients, atol=0.1)
    balanced, _ = fit(tmp_path, {**hp, "positive_example_weight_mult": "balanced"}, train, name="balanced")
    assert balanced.selected["positive_example_weight_mult"] == pytest.approx(
        np.sum(y[:10_000] == 0) / np.sum(y[:10_000] == 1), rel=1e-6
    )  # from the 10,000-row scaler sample


def test_balanced_multiclass_weights_help_a_rare_class(tmp_path):
    x, y = load_digits(return_X_y=True)
    keep = (y != 3) | (np.arange(len(y)) % 8 == 0)  # class 3 becomes rare
    x, y = x[keep], y[keep]
    hp = {
        "predictor_type": "multiclass_classifier",
        "num_classes": 10,
        "num_models": 1,
        "mini_batch_size": 64,
        "epochs": 3,
        "learning_rate": 0.002,
    }
    train = write_channel(tmp_path / "train", x, y)
    plain, _ = fit(tmp_path, hp, train, name="plain")
    weighted, _ = fit(tmp_path, {**hp, "balance_multiclass_weights": "true"}, train, name="weighted")
    rare = y == 3
    assert predict(weighted, x[rare])["score"][:, 3].mean() > predict(plain, x[rare])["score"][:, 3].mean()


def test_sparse_channel_matches_dense(tmp_path):
    x_train, x_test, y_train, y_test = split(load_digits)
    hp = {
        "predictor_type": "multiclass_classifier",
        "num_classes": 10,
        "mini_batch_size": 64,
        "epochs": 4,
        "num_models": 4,
    }
    dense, _ = fit(tmp_path, hp, write_channel(tmp_path / "dense", x_train, y_train), name="dense")
    sparse, _ = fit(
        tmp_path, hp, write_channel(tmp_path / "sparse", sp.csr_matrix(x_train), y_train), name="sparse"
    )
    np.testing.assert_allclose(sparse.coefficients, dense.coefficients, rtol=1e-3, atol=1e-3)
    out = sparse.predict(Batch(sp.csr_matrix(x_test, dtype=np.float32)))
    np.testing.assert_array_equal(out["predicted_label"], predict(dense, x_test)["predicted_label"])


def test_replaying_epochs_from_memory_equals_streaming(tmp_path, cancer, monkeypatch):
    x_train, x_test, y_train, _ = cancer
    train = write_channel(tmp_path / "train", x_train, y_train)
    hp = {"predictor_type": "binary_classifier", "mini_batch_size": 50, "epochs": 4}
    replayed, _ = fit(tmp_path, hp, train, name="replayed")
    monkeypatch.setattr(linear_learner, "REPLAY_BYTES", 1000)
    streamed, _ = fit(tmp_path, hp, train, name="streamed")
    np.testing.assert_array_equal(streamed.coefficients, replayed.coefficients)


def test_held_out_rows_are_the_same_every_epoch():
    holdout = linear_learner._Holdout(world_size=1, feature_dim=2, worker_records=10_000)
    x = np.arange(20_000, dtype=np.float32).reshape(-1, 2)
    y = np.zeros(10_000, dtype=np.float32)

    def trained(i):
        keep = holdout.split(Batch(x[i : i + 100], y[i : i + 100]), y[i : i + 100])
        return np.ones(100, dtype=bool) if keep is None else keep

    masks = []
    for _ in range(3):
        holdout.start_epoch()
        masks.append(np.concatenate([trained(i) for i in range(0, 10_000, 100)]))
    assert all((m == masks[0]).all() for m in masks)
    assert (~masks[0]).mean() == pytest.approx(0.1, abs=0.01)
    assert holdout.rows == int((~masks[0]).sum())


@pytest.mark.parametrize(
    "case",
    ["binary-dense", "binary-sparse", "multiclass", "regressor"],
)
def test_torch_backend_matches_numpy(tmp_path, monkeypatch, case):
    if case.startswith("binary"):
        x_train, _, y_train, _ = split(load_breast_cancer)
        hp = {"predictor_type": "binary_classifier", "l1": 1e-4}
    elif case == "multiclass":
        x_train, _, y_train, _ = split(load_wine)
        hp = {
            "predictor_type": "multiclass_classifier",
            "num_classes": 3,
            "balance_multiclass_weights": "true",
        }
    else:
        x_train, _, y_train, _ = split(load_diabetes, stratify=False)
        hp = {"predictor_type": "regressor", "loss": "huber_loss", "huber_delta": 20}
    x = sp.csr_matrix(x_train) if case == "binary-sparse" else x_train
    train = write_channel(tmp_path / "train", x, y_train)
    hp = {**hp, "mini_batch_size": 32, "epochs": 3, "num_models": 8}
    monkeypatch.setenv(BACKEND_ENV, "numpy")
    reference, ref_reporter = fit(tmp_path, hp, train, validation=train, name="numpy")
    monkeypatch.setenv(BACKEND_ENV, "torch")
    torched, reporter = fit(tmp_path, hp, train, validation=train, name="torch")
    scale = np.abs(reference.coefficients).max()
    np.testing.assert_allclose(torched.coefficients, reference.coefficients, atol=1e-4 * scale)
    for name, value in ref_reporter.final_metrics.items():
        assert reporter.final_metrics[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name


def test_loss_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    ops = kernels.NumpyLinearOps(np.float64)
    z = rng.normal(size=(7, 3))
    cases = [(name, (rng.random((7, 1)) > 0.5).astype(float)) for name in losses.BINARY_LOSSES]
    cases += [(name, rng.normal(size=(7, 1))) for name in losses.REGRESSION_LOSSES]
    for name, y in cases:
        loss = losses.Loss(name, margin=0.7, quantile=0.3, insensitivity=0.2, delta=0.5)
        value, grad = loss.value_grad(ops, z.copy(), y)
        h = 1e-6
        numeric = (loss.value_grad(ops, z + h, y)[0] - loss.value_grad(ops, z - h, y)[0]) / (2 * h)
        np.testing.assert_allclose(grad, numeric, atol=1e-4, err_msg=name)
    logits = rng.normal(size=(5, 2, 4))
    labels = rng.integers(0, 4, size=5)
    softmax = losses.Loss("softmax_loss")
    value, grad = softmax.value_grad(ops, logits.copy(), labels)
    expected = -np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))[np.arange(5), :, labels]
    np.testing.assert_allclose(value, expected, rtol=1e-10)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    probs[np.arange(5), :, labels] -= 1
    np.testing.assert_allclose(grad, probs, rtol=1e-10, atol=1e-12)

"""The XGBoost built-in in one process, against ``xgboost.train`` and scikit-learn on real datasets.

Multi-worker runs need one process per worker (XGBoost's collective is per process): they are in
test_xgboost_spark.py (local[2]) and test_xgboost_cluster.py (local-cluster).
"""

import json
import os
import shutil

import numpy as np
import pytest
import scipy.sparse as sp
import xgboost as xgb
from sklearn import metrics as skm
from sklearn.datasets import dump_svmlight_file, load_breast_cancer, load_diabetes, load_digits
from sklearn.model_selection import train_test_split

from algorithms.artifact import read_manifest
from algorithms.batch import Batch
from algorithms.builtin import load_model, run_builtin
from algorithms.builtin.xgboost.algorithm import GPUUnavailable, XGBoost
from algorithms.builtin.xgboost.data import DataError
from algorithms.channel import RECORDIO_PROTOBUF, Channel, Manifest, Shard
from algorithms.hyperparameters import HyperparameterError
from algorithms.tensor_codec import encode_dense, encode_sparse
from algorithms.training import ChannelInput, Reporter, TrainingEnv


class Recorder(Reporter):
    def __init__(self):
        super().__init__()
        self.series: list[tuple[str, float, int | None]] = []
        self.lines: list[str] = []

    def metric(self, name, value, epoch=None, step=None):
        super().metric(name, value, epoch, step)
        self.series.append((name, float(value), epoch))

    def log(self, message):
        self.lines.append(message)


def protobuf_channel(path, x, y, parts=2, sparse=False) -> Channel:
    os.makedirs(path)
    shards = []
    for i, rows in enumerate(np.array_split(np.arange(x.shape[0]), parts)):
        labels = None if y is None else np.asarray(y[rows], np.float32)
        data = (encode_sparse(sp.csr_matrix(x[rows], dtype=np.float32), labels) if sparse
                else encode_dense(np.asarray(x[rows], np.float32), labels))
        name = f"part-{i:05d}.pbr"
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
        shards.append(Shard(name, len(rows), len(data)))
    manifest = Manifest(RECORDIO_PROTOBUF, tuple(shards), feature_dim=x.shape[1], has_label=y is not None,
                        sparse=sparse)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write(manifest.to_json())
    return Channel.open(path)


def csv_channel(path, x, y, parts=2, weights=None) -> Channel:
    os.makedirs(path)
    for i, rows in enumerate(np.array_split(np.arange(len(x)), parts)):
        columns = [y[rows]] + ([weights[rows]] if weights is not None else []) + [x[rows]]
        np.savetxt(os.path.join(path, f"part-{i}.csv"), np.column_stack(columns).astype(np.float32), delimiter=",",
                   fmt="%.9g")
    return Channel.open(path)


def libsvm_channel(path, x, y, parts=2, qid=None) -> Channel:
    os.makedirs(path)
    for i, rows in enumerate(np.array_split(np.arange(x.shape[0]), parts)):
        with open(os.path.join(path, f"part-{i}.libsvm"), "w") as f:
            for j in rows:  # every value written, zeros too: present values, as in the dense channel
                head = f"{y[j]:g}" + (f" qid:{qid[j]}" if qid is not None else "")
                f.write(head + " " + " ".join(f"{k}:{v:.9g}" for k, v in enumerate(x[j])) + "\n")
    return Channel.open(path)


def train(tmp_path, hyperparameters, train_channel, validation=None, gpus=(), reporter=None, name="model"):
    channels = {"train": ChannelInput.from_channel("train", train_channel)}
    if validation is not None:
        channels["validation"] = ChannelInput.from_channel("validation", validation)
    env = TrainingEnv(dict(hyperparameters), channels, str(tmp_path / name), reporter=reporter or Recorder(),
                      gpus=list(gpus), num_cpus=2)
    result = run_builtin("xgboost", env)
    return result, load_model(str(tmp_path / name)), env.reporter


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return train_test_split(x.astype(np.float32), y.astype(np.float32), test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def cancer_channels(tmp_path_factory, cancer):
    xt, xv, yt, yv = cancer
    root = tmp_path_factory.mktemp("cancer")
    return protobuf_channel(str(root / "train"), xt, yt), protobuf_channel(str(root / "validation"), xv, yv)


BINARY = {"num_round": "40", "objective": "binary:logistic", "max_depth": "3", "eta": "0.2", "subsample": "0.8",
          "seed": "7", "eval_metric": "logloss,auc"}


def _reference(params: dict, x, y, rounds, **kw) -> xgb.Booster:
    return xgb.train({**params, "nthread": 2}, xgb.DMatrix(x, y, **kw), num_boost_round=rounds)


def test_breast_cancer_auc_equals_single_process_xgboost(tmp_path, cancer, cancer_channels):
    xt, xv, yt, yv = cancer
    result, model, reporter = train(tmp_path, BINARY, *cancer_channels)
    reference = _reference({"objective": "binary:logistic", "max_depth": 3, "eta": 0.2, "subsample": 0.8,
                            "seed": 7}, xt, yt, 40)
    expected = skm.roc_auc_score(yv, reference.predict(xgb.DMatrix(xv)))
    score = model.predict(Batch(xv))["score"]
    assert abs(skm.roc_auc_score(yv, score) - expected) <= 0.005
    assert abs(result.metrics["validation:auc"] - skm.roc_auc_score(yv, score)) < 1e-6
    # every round streamed with SageMaker's names, plus XGBoost's own log line
    rounds = [epoch for name, _, epoch in reporter.series if name == "validation:auc"]
    assert rounds == list(range(40))
    assert {name for name, _, _ in reporter.series} == {"train:logloss", "train:auc", "validation:logloss",
                                                        "validation:auc"}
    assert any(line.startswith("[39]\ttrain-logloss:") and "validation-auc:" in line for line in reporter.lines)


def test_diabetes_rmse_within_two_percent_of_single_process_xgboost(tmp_path):
    x, y = load_diabetes(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x.astype(np.float32), y.astype(np.float32), test_size=0.3, random_state=0)
    hps = {"num_round": "60", "max_depth": "3", "eta": "0.1", "min_child_weight": "3", "eval_metric": "rmse,mae"}
    channels = protobuf_channel(str(tmp_path / "t"), xt, yt), protobuf_channel(str(tmp_path / "v"), xv, yv)
    result, model, reporter = train(tmp_path, {**hps, "sketch_eps": "0.1"}, *channels)
    assert any(line.startswith("sketch_eps: no effect in XGBoost") for line in reporter.lines)
    reference = _reference({"max_depth": 3, "eta": 0.1, "min_child_weight": 3}, xt, yt, 60)
    expected = skm.root_mean_squared_error(yv, reference.predict(xgb.DMatrix(xv)))
    got = skm.root_mean_squared_error(yv, model.predict(Batch(xv))["score"])
    assert abs(got - expected) <= 0.02 * expected
    assert result.metrics["validation:rmse"] == pytest.approx(got, rel=1e-5)
    assert result.metrics["validation:mae"] == pytest.approx(skm.mean_absolute_error(yv, model.predict(
        Batch(xv))["score"]), rel=1e-5)


def test_libsvm_and_csv_give_the_same_model_as_recordio_protobuf(tmp_path, cancer, cancer_channels):
    xt, xv, yt, yv = cancer
    hps = {k: v for k, v in BINARY.items() if k != "subsample"}
    _, dense, _ = train(tmp_path, hps, cancer_channels[0], name="dense")
    expected = dense.predict(Batch(xv))["score"]
    others = {
        "libsvm": libsvm_channel(str(tmp_path / "svm"), xt, yt, parts=3),
        "csv": csv_channel(str(tmp_path / "csv"), xt, yt, parts=3),
    }
    for name, channel in others.items():
        _, model, _ = train(tmp_path, hps, channel, name=name)
        np.testing.assert_allclose(model.predict(Batch(xv))["score"], expected, rtol=0, atol=1e-6, err_msg=name)
        assert model.feature_dim == 30


def test_sparse_records_treat_absent_entries_as_missing_like_libsvm(tmp_path, cancer):
    xt, xv, yt, yv = cancer
    x = xt.copy()
    x[x < np.median(x, axis=0)] = 0  # half of every column absent from the sparse records
    csr = sp.csr_matrix(x)
    hps = {"num_round": "15", "objective": "binary:logistic", "max_depth": "3"}
    _, from_protobuf, _ = train(tmp_path, hps, protobuf_channel(str(tmp_path / "pbr"), csr, yt, sparse=True),
                                name="pbr")
    os.makedirs(tmp_path / "svm")
    dump_svmlight_file(csr, yt, str(tmp_path / "svm" / "part-0.libsvm"), zero_based=True)
    _, from_libsvm, _ = train(tmp_path, hps, Channel.open(str(tmp_path / "svm")), name="svm")
    reference = _reference({"objective": "binary:logistic", "max_depth": 3}, csr, yt, 15)
    expected = reference.predict(xgb.DMatrix(sp.csr_matrix(xv)))
    for model in (from_protobuf, from_libsvm):
        np.testing.assert_allclose(model.predict(Batch(sp.csr_matrix(xv)))["score"], expected, atol=1e-6)


def test_early_stopping_keeps_the_best_iteration(tmp_path, cancer, cancer_channels):
    xt, xv, yt, yv = cancer
    hps = {"num_round": "300", "objective": "binary:logistic", "eta": "0.5", "max_depth": "4",
           "eval_metric": "auc,logloss", "early_stopping_rounds": "5"}
    result, model, reporter = train(tmp_path, hps, *cancer_channels)
    params = {"objective": "binary:logistic", "eta": 0.5, "max_depth": 4, "eval_metric": ["auc", "logloss"],
              "nthread": 2}
    reference = xgb.train(params, xgb.DMatrix(xt, yt), 300, evals=[(xgb.DMatrix(xv, yv), "validation")],
                          early_stopping_rounds=5, verbose_eval=False)
    assert int(model.best_iteration) == reference.best_iteration
    assert model.booster.num_boosted_rounds() == reference.best_iteration + 1
    losses = [v for name, v, _ in reporter.series if name == "validation:logloss"]
    assert len(losses) == reference.best_iteration + 6  # five rounds past the best, then stopped
    assert result.metrics["validation:logloss"] == pytest.approx(min(losses))
    assert result.metrics["validation:logloss"] == pytest.approx(
        skm.log_loss(yv, model.predict(Batch(xv))["score"]), rel=1e-4)


def test_sagemaker_metrics_equal_scikit_learn(tmp_path, cancer, cancer_channels):
    xt, xv, yt, yv = cancer
    names = ["accuracy", "balanced_accuracy", "f1", "f1_binary", "precision", "recall", "precision_macro",
             "recall_micro"]
    hps = {**BINARY, "eval_metric": ",".join(names)}
    result, model, _ = train(tmp_path, hps, *cancer_channels)
    predicted = (model.predict(Batch(xv))["score"] > 0.5).astype(int)
    expected = {"accuracy": skm.accuracy_score(yv, predicted),
                "balanced_accuracy": skm.balanced_accuracy_score(yv, predicted),
                "f1": skm.f1_score(yv, predicted, average="macro"), "f1_binary": skm.f1_score(yv, predicted),
                "precision": skm.precision_score(yv, predicted), "recall": skm.recall_score(yv, predicted),
                "precision_macro": skm.precision_score(yv, predicted, average="macro"),
                "recall_micro": skm.recall_score(yv, predicted, average="micro")}
    for name, value in expected.items():
        assert result.metrics[f"validation:{name}"] == pytest.approx(value, abs=1e-6), name


def test_regression_sagemaker_metrics_equal_scikit_learn(tmp_path):
    x, y = load_diabetes(return_X_y=True)
    x, y = x.astype(np.float32), y.astype(np.float32)
    result, model, _ = train(tmp_path, {"num_round": "20", "max_depth": "2", "eval_metric": "mse,r2"},
                             protobuf_channel(str(tmp_path / "t"), x, y))
    p = model.predict(Batch(x))["score"]
    assert result.metrics["train:mse"] == pytest.approx(skm.mean_squared_error(y, p), rel=1e-5)
    assert result.metrics["train:r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-5)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x.astype(np.float32), y.astype(np.float32), test_size=0.3, random_state=0, stratify=y)


def test_multiclass_softprob_and_softmax_equal_single_process_xgboost(tmp_path, digits):
    xt, xv, yt, yv = digits
    channel = protobuf_channel(str(tmp_path / "digits"), xt, yt)
    params = {"num_class": 10, "max_depth": 3, "eta": 0.3}
    reference = _reference({**params, "objective": "multi:softprob"}, xt, yt, 20)
    expected = reference.predict(xgb.DMatrix(xv))
    hps = {"num_round": "20", "num_class": "10", "max_depth": "3", "objective": "multi:softprob",
           "eval_metric": "merror,f1_macro,accuracy"}
    result, softprob, _ = train(tmp_path, hps, channel, name="softprob")
    got = softprob.predict(Batch(xv))["score"]
    assert got.shape == (len(xv), 10)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert result.metrics["train:accuracy"] == pytest.approx(1 - result.metrics["train:merror"], abs=1e-6)
    _, softmax, _ = train(tmp_path, {**hps, "objective": "multi:softmax"}, channel, name="softmax")
    np.testing.assert_array_equal(softmax.predict(Batch(xv))["score"], np.argmax(expected, axis=1))
    assert [o.name for o in softmax.outputs] == ["score"] and softmax.outputs[0].kind == "scalar"
    assert softprob.outputs[0].kind == "vector"


def test_instance_weights_from_the_csv_weight_column(tmp_path, cancer):
    xt, xv, yt, yv = cancer
    weights = np.where(yt == 1, 3.0, 0.5).astype(np.float32)
    channel = csv_channel(str(tmp_path / "weighted"), xt, yt, weights=weights)
    hps = {"num_round": "10", "objective": "binary:logistic", "max_depth": "3", "csv_weights": "1"}
    _, model, _ = train(tmp_path, hps, channel)
    reference = _reference({"objective": "binary:logistic", "max_depth": 3}, xt, yt, 10, weight=weights)
    np.testing.assert_allclose(model.predict(Batch(xv))["score"], reference.predict(xgb.DMatrix(xv)), atol=1e-6)
    assert model.feature_dim == 30


def test_ranking_with_query_ids_from_libsvm(tmp_path, cancer):
    xt, _, yt, _ = cancer
    qid = np.repeat(np.arange(len(xt) // 10 + 1), 10)[: len(xt)]
    relevance = (yt * 2 + (xt[:, 0] > np.median(xt[:, 0]))).astype(np.float32)
    channel = libsvm_channel(str(tmp_path / "rank"), xt, relevance, parts=2, qid=qid)
    hps = {"num_round": "10", "objective": "rank:ndcg", "max_depth": "3", "eval_metric": "ndcg@5"}
    result, model, _ = train(tmp_path, hps, channel)
    reference = _reference({"objective": "rank:ndcg", "max_depth": 3}, xt, relevance, 10, qid=qid)
    np.testing.assert_allclose(model.predict(Batch(xt))["score"], reference.predict(xgb.DMatrix(xt)), atol=1e-5)
    assert 0 < result.metrics["train:ndcg@5"] <= 1


# SageMaker's file name has no extension: XGBoost guesses the format, and says so
@pytest.mark.filterwarnings("ignore:.*Unknown file format.*Using UBJSON:UserWarning")
def test_artifact_is_a_plain_xgboost_booster(tmp_path, cancer, cancer_channels):
    xt, xv, yt, yv = cancer
    _, model, _ = train(tmp_path, BINARY, *cancer_channels)
    path = tmp_path / "model" / "xgboost-model"
    booster = xgb.Booster()
    booster.load_model(str(path))
    np.testing.assert_allclose(booster.predict(xgb.DMatrix(xv)), model.predict(Batch(xv))["score"], atol=1e-6)
    manifest = read_manifest(str(tmp_path / "model"))
    assert manifest.algorithm == "xgboost" and manifest.files == ["xgboost-model"] and manifest.feature_dim == 30
    assert json.loads(bytes(booster.save_raw("json")))["learner"]["objective"]["name"] == "binary:logistic"
    again = type(model).from_arrays(model.to_arrays(), model.hyperparameters, 30)
    np.testing.assert_array_equal(again.predict(Batch(xv))["score"], model.predict(Batch(xv))["score"])


def test_configured_outputs_leaves_and_contributions(tmp_path, cancer, cancer_channels):
    xt, xv, yt, yv = cancer
    _, model, _ = train(tmp_path, {**BINARY, "num_round": "12"}, *cancer_channels)
    full = model.configured(outputs=["score", "prediction", "probability", "rawPrediction", "leaf", "contrib"])
    out = full.predict(Batch(xv))
    margin = model.booster.predict(xgb.DMatrix(xv), output_margin=True)
    np.testing.assert_allclose(out["rawPrediction"], np.stack([-margin, margin], axis=1), atol=1e-5)
    np.testing.assert_allclose(out["probability"][:, 1], out["score"], atol=1e-6)
    np.testing.assert_array_equal(out["prediction"], (out["score"] > 0.5).astype(float))
    assert out["leaf"].shape == (len(xv), 12)
    np.testing.assert_array_equal(out["leaf"], model.booster.predict(xgb.DMatrix(xv), pred_leaf=True))
    assert out["contrib"].shape == (len(xv), 31)
    np.testing.assert_allclose(out["contrib"].sum(axis=1), margin, atol=1e-4)  # SHAP values add up to the margin
    with pytest.raises(ValueError, match="not available for objective binary:logistic"):
        model.configured(outputs=["projection"])
    with pytest.raises(ValueError, match="the model expects 30 features, got 29"):
        model.predict(Batch(xv[:, :29]))


@pytest.mark.parametrize("hps, labels, message", [
    ({"objective": "binary:logistic"}, [0, 1, 2], r"record 2: label 2 is out of range for objective "
     r"binary:logistic: labels must be in \[0, 1\] \(for more classes use multi:softprob with num_class\)"),
    ({"objective": "multi:softmax", "num_class": "3"}, [0, 1, 3], r"record 2: label 3 is out of range for "
     r"objective multi:softmax: with num_class=3 labels must be the integers 0..2"),
    ({"objective": "multi:softprob", "num_class": "3"}, [0, 1.5, 2], r"label 1.5 is out of range"),
    ({"objective": "count:poisson"}, [0, -1, 2], r"labels must be ≥ 0"),
    ({"objective": "reg:gamma"}, [1, 2, 0], r"labels must be > 0"),
    ({}, [0, np.nan, 1], r"record 1: the label is nan \(labels must be finite numbers\)"),
])
def test_bad_labels_fail_naming_channel_file_and_record(tmp_path, hps, labels, message):
    x = np.arange(9, dtype=np.float32).reshape(3, 3)
    channel = protobuf_channel(str(tmp_path / "bad"), x, np.array(labels, np.float32), parts=1)
    with pytest.raises(DataError, match=r"channel train, .*part-00000\.pbr, .*" + message):
        train(tmp_path, {"num_round": "2", **hps}, channel)


def test_unlabeled_train_channel_is_refused(tmp_path):
    channel = protobuf_channel(str(tmp_path / "nolabels"), np.ones((4, 2), np.float32), None, parts=1)
    with pytest.raises(DataError, match="records have no label"):
        train(tmp_path, {"num_round": "2"}, channel)


def test_ranking_without_query_ids_is_refused(tmp_path, cancer_channels):
    with pytest.raises(DataError, match="rank:ndcg needs query ids"):
        train(tmp_path, {"num_round": "2", "objective": "rank:ndcg"}, cancer_channels[0])


@pytest.mark.parametrize("hps, name, fragment", [
    ({}, "num_round", "is required"),
    ({"num_round": "0"}, "num_round", "at least|in \\[1"),
    ({"num_round": "5", "eta": "1.5"}, "eta", "in \\[0, 1\\]"),
    ({"num_round": "5", "objective": "multi:softprob"}, "num_class", "required for objective multi:softprob"),
    ({"num_round": "5", "num_class": "3"}, "num_class", "multi:softmax and multi:softprob only"),
    ({"num_round": "5", "eval_metric": "auc"}, "eval_metric", "auc applies to classification and ranking"),
    ({"num_round": "5", "eval_metric": "rmse@3"}, "eval_metric", "threshold"),
    ({"num_round": "5", "eval_metric": "accuracy"}, "eval_metric", "accuracy applies to binary"),
    ({"num_round": "5", "tree_method": "exact", "grow_policy": "lossguide"}, "grow_policy", "lossguide"),
    ({"num_round": "5", "monotone_constraints": "(1,2)"}, "monotone_constraints", "-1, 0 or 1"),
    ({"num_round": "5", "interaction_constraints": "[[0,'a']]"}, "interaction_constraints", "lists of feature"),
    ({"num_round": "5", "objective": "reg:absolute"}, "objective", "one of"),
    ({"num_round": "5", "updater": "grow_colmaker,grow_histmaker"}, "updater", "one tree-growing"),
    ({"num_round": "5", "subsample": "0"}, "subsample", "\\(0, 1\\]"),
])
def test_bad_hyperparameters_name_the_hyperparameter(hps, name, fragment):
    with pytest.raises(HyperparameterError, match=fragment) as info:
        XGBoost.validate(hps)
    assert info.value.name == name


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present: XGBoost can use CUDA here")
def test_a_gpu_worker_says_when_xgboost_cannot_use_cuda(tmp_path, cancer_channels, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(GPUUnavailable, match=r"worker 0 was given device=cuda \(GPU 3 from Spark, "
                       r"CUDA_VISIBLE_DEVICES=3\), but XGBoost .* cannot use CUDA: .*GPU"):
        train(tmp_path, BINARY, *cancer_channels, gpus=["3"])


def test_gpu_hist_without_a_gpu_is_refused(tmp_path, cancer_channels):
    with pytest.raises(GPUUnavailable, match="gpu_hist trains on a GPU, but this worker has none"):
        train(tmp_path, {**BINARY, "tree_method": "gpu_hist"}, *cancer_channels)


def test_exact_tree_method_trains_from_rows_in_memory(tmp_path, cancer, cancer_channels):
    xt, xv, yt, yv = cancer
    _, model, _ = train(tmp_path, {"num_round": "10", "objective": "binary:logistic", "tree_method": "exact",
                                   "max_depth": "3"}, *cancer_channels)
    reference = _reference({"objective": "binary:logistic", "tree_method": "exact", "max_depth": 3}, xt, yt, 10)
    np.testing.assert_allclose(model.predict(Batch(xv))["score"], reference.predict(xgb.DMatrix(xv)), atol=1e-6)

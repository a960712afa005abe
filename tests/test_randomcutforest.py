"""Random Cut Forest against independent references: rrcf (Guha et al.'s RRCF in Python) on the same samples,
scikit-learn's IsolationForest on its bundled breast cancer data, the hypergeometric law of a uniform sample for
the merged reservoirs; SageMaker's response shapes and test metrics; bad input. Workers run as threads.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from _kmeans_pca_support import train, write_channel
from scipy import stats
from test_serving_server import call

from algorithms.batch import Batch
from algorithms.builtin.randomcutforest import RandomCutForestModel, build_forest
from algorithms.builtin.randomcutforest.metrics import anomaly_threshold
from algorithms.builtin.sampling import add_rows, compact, empty_sample, merge_samples, sampled_rows
from algorithms.channel import RECORDIO_PROTOBUF, Channel, Manifest, Shard
from algorithms.hyperparameters import HyperparameterError
from algorithms.serving.app import InferenceApp
from algorithms.tensor_codec import encode_dense


def load_rrcf():
    """rrcf's RCTree. Its package __init__ imports pkg_resources, which recent setuptools no longer ships, so the
    module file that holds the algorithm (it imports numpy only) is loaded on its own."""
    spec = importlib.util.find_spec("rrcf")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("rrcf is not installed (it is in the test extra)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "rrcf.py")
    module_spec = importlib.util.spec_from_file_location("rrcf_rrcf", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def planted(n: int, d: int, anomalies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian rows, the first ``anomalies`` of them moved 3-5 standard deviations out in every feature."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[:anomalies] = rng.uniform(3, 5, (anomalies, d)) * rng.choice([-1, 1], (anomalies, d))
    labels = np.zeros(n)
    labels[:anomalies] = 1
    return x.astype(np.float32), labels


def labelled_channel(path, x: np.ndarray, labels: np.ndarray) -> Channel:
    os.makedirs(path)
    data = encode_dense(np.asarray(x, np.float32), np.asarray(labels, np.float32))
    with open(os.path.join(path, "part-00000.pbr"), "wb") as f:
        f.write(data)
    manifest = Manifest(RECORDIO_PROTOBUF, (Shard("part-00000.pbr", len(x), len(data)),), feature_dim=x.shape[1],
                        has_label=True, label_dim=1)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write(manifest.to_json())
    return Channel.open(str(path))


def forest_of(x: np.ndarray, trees: int, samples: int, seed: int = 0):
    state = add_rows(empty_sample(trees, samples, x.shape[1]), samples, x, np.random.default_rng(seed))
    rows, _ = sampled_rows(compact(state, samples))
    return build_forest(rows, np.random.default_rng(seed + 1))


# ------------------------------------------------------------------------------------------------ sampling


def test_merged_worker_samples_are_uniform_samples_of_the_whole_channel():
    """Two workers with 10 and 50 of 60 rows, streamed in uneven batches: the merged 6-row samples include each
    row with probability 6/60 and take from the small worker as many rows as a uniform sample would, by the
    hypergeometric law (a merge that took rows in proportion to the samples, not to the rows, would not)."""
    rows, size, lanes = 60, 6, 2000
    x = np.arange(rows, dtype=np.float32)[:, None]
    small, large = x[:10], x[10:]
    states = []
    for rank, part in enumerate((small, large)):
        state = empty_sample(lanes, size, 1)
        rng = np.random.default_rng([7, rank])
        for start, stop in ((0, 3), (3, 4), (4, 17), (17, 50)):
            state = add_rows(state, size, part[start:stop], rng)
        states.append(compact(state, size))
    merged, _ = sampled_rows(merge_samples(states, size))
    assert merged.shape == (lanes, size, 1)
    chosen = merged[:, :, 0].astype(int)
    assert all(len(set(lane)) == size for lane in chosen)  # without replacement
    counts = np.bincount(chosen.ravel(), minlength=rows)
    assert stats.chisquare(counts).pvalue > 1e-3
    from_small = (chosen < 10).sum(axis=1)
    expected = stats.hypergeom(rows, 10, size).pmf(np.arange(size + 1)) * lanes
    observed = np.bincount(from_small, minlength=size + 1)
    keep = expected >= 5  # pool the sparse tail, as the chi-square test needs
    observed = np.append(observed[keep], observed[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # and one worker streaming all 60 rows draws from the same law
    single = compact(add_rows(empty_sample(lanes, size, 1), size, x, np.random.default_rng(3)), size)
    alone = (sampled_rows(single)[0][:, :, 0] < 10).sum(axis=1)
    assert stats.ks_2samp(alone, from_small).pvalue > 1e-3


def test_memory_is_bounded_by_the_sample_not_the_rows():
    state = empty_sample(3, 4, 2)
    rng = np.random.default_rng(0)
    for _ in range(200):
        state = add_rows(state, 4, rng.standard_normal((500, 2)).astype(np.float32), rng)
    assert state["rows"].shape[1] <= 4 + 256 and state["seen"][0] == 100_000


# ------------------------------------------------------------------------------------------------- scoring


def test_scores_agree_with_rrcf_on_the_same_samples():
    """rrcf builds its own trees from our trees' samples and scores each query by inserting it, taking its
    codisp and forgetting it; our score is the exact expectation of that codisp. Spearman >= 0.9."""
    rrcf = load_rrcf()
    x, _ = planted(2000, 4, 20, seed=0)
    forest = forest_of(x, trees=60, samples=64, seed=1)
    queries = np.concatenate([x[:15], x[100:235]])
    np.random.seed(3)  # rrcf draws its cuts from numpy's global generator
    trees = [rrcf.RCTree(forest.tree_points(t).astype(np.float64)) for t in range(forest.num_trees)]
    theirs = []
    for q in queries.astype(np.float64):
        total = 0.0
        for tree in trees:
            tree.insert_point(q, index="q")
            total += tree.codisp("q")
            tree.forget_point("q")
        theirs.append(total / len(trees))
    ours = forest.expected_codisp(queries).mean(axis=0)
    assert stats.spearmanr(ours, theirs).statistic >= 0.9
    assert ours[:15].min() > np.percentile(ours[15:], 90)  # the planted anomalies score highest


def test_vectorized_scores_equal_a_plain_walk_of_each_tree():
    x, _ = planted(500, 3, 5, seed=2)
    forest = forest_of(x, trees=8, samples=32, seed=4)
    queries = np.concatenate([x[:5], forest.tree_points(0)[:3], np.array([[100.0, -100.0, 0.0]], np.float32)])
    expected = np.zeros((forest.num_trees, len(queries)))
    for t in range(forest.num_trees):
        for r, row in enumerate(queries.astype(np.float64)):
            path = [int(forest.roots[t])]
            while forest.children[path[-1], 0] != path[-1]:
                node = path[-1]
                path.append(int(forest.children[node, int(row[forest.feature[node]] > forest.threshold[node])]))
            leaf = path[-1]
            if np.array_equal(forest.lo[leaf].astype(np.float64), row):
                value = forest.ratio_max[leaf]
            else:
                value = max(forest.mass[leaf], forest.ratio_max[leaf])
                for node in reversed(path[:-1]):
                    out = (np.maximum(forest.lo[node], row) - np.minimum(forest.hi[node], row)).sum()
                    p = out / (forest.range_sum[node] + out)
                    value = p * max(forest.mass[node], forest.ratio_max[node]) + (1 - p) * value
            expected[t, r] = value
    np.testing.assert_allclose(forest.expected_codisp(queries), expected, rtol=1e-6)


def test_score_is_sagemaker_scaled_and_trees_split_on_bounding_box_ranges(tmp_path):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((400, 2)) * [100.0, 0.01]).astype(np.float32)  # feature 1 has almost no range
    channel = write_channel(str(tmp_path / "train"), x)
    _, model = train("randomcutforest", {"num_trees": "50", "num_samples_per_tree": "64"}, channel,
                     str(tmp_path / "model"))
    forest = model.forest
    internal = forest.children[:, 0] != np.arange(forest.num_nodes)
    assert (forest.feature[internal] == 0).mean() > 0.95  # cuts go where the ranges are (Guha et al.)
    far = model.predict(Batch(np.array([[1e6, 0.0]], np.float32)))["score"][0]
    assert far == pytest.approx(np.log2(1 + 64), rel=1e-3)  # cut off at every root: the top of the scale
    normal = model.predict(Batch(x))["score"]
    assert normal.dtype == np.float32 and np.median(normal) < 1.0


# -------------------------------------------------------------------------------------------- training jobs


def test_one_and_two_workers_give_forests_of_the_same_quality(tmp_path):
    x, labels = planted(4000, 5, 40, seed=6)
    channel = write_channel(str(tmp_path / "train"), x, parts=4)
    aucs, sizes = [], []
    for workers in (1, 2):
        _, model = train("randomcutforest", {"num_trees": "50", "num_samples_per_tree": "128"}, channel,
                         str(tmp_path / f"model-{workers}"), workers=workers)
        scores = model.predict(Batch(x))["score"]
        aucs.append(roc_auc(labels, scores))
        sizes.append(model.num_samples_per_tree)
    assert sizes == [128, 128]
    assert min(aucs) >= 0.99 and abs(aucs[0] - aucs[1]) <= 0.01


def roc_auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def test_breast_cancer_anomaly_auc_within_003_of_isolation_forest(tmp_path):
    """Benign tumours are the normal class; malignant ones, subsampled to 5% of the rows, the anomalies."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import IsolationForest

    data = load_breast_cancer()
    normal, malignant = data.data[data.target == 1], data.data[data.target == 0]
    rng = np.random.default_rng(0)
    anomalies = malignant[rng.choice(len(malignant), round(0.05 * len(normal) / 0.95), replace=False)]
    x = np.concatenate([normal, anomalies]).astype(np.float32)
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
    channel = write_channel(str(tmp_path / "train"), x, parts=2)
    _, model = train("randomcutforest", {"num_trees": "100", "num_samples_per_tree": "256"}, channel,
                     str(tmp_path / "model"), workers=2)
    ours = roc_auc(labels, model.predict(Batch(x))["score"])
    isolation = IsolationForest(n_estimators=100, max_samples=256, random_state=0).fit(x)
    theirs = roc_auc(labels, -isolation.score_samples(x))
    assert abs(ours - theirs) <= 0.03, (ours, theirs)


def test_test_channel_metrics_use_sagemakers_mean_plus_3_sigma_threshold(tmp_path):
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    x, labels = planted(1500, 3, 15, seed=8)
    channel = write_channel(str(tmp_path / "train"), x, parts=2)
    test = labelled_channel(tmp_path / "test", x, labels)
    results, model = train("randomcutforest", {"num_trees": "50", "num_samples_per_tree": "64"}, channel,
                           str(tmp_path / "model"), workers=2, test_channel=test)
    scores = model.predict(Batch(x))["score"].astype(np.float64)
    predicted = scores > scores.mean() + 3 * scores.std()
    assert anomaly_threshold(scores) == pytest.approx(scores.mean() + 3 * scores.std())
    expected = {"test:accuracy": accuracy_score(labels, predicted), "test:f1": f1_score(labels, predicted),
                "test:precision": precision_score(labels, predicted), "test:recall": recall_score(labels, predicted)}
    for result in results:
        for name, value in expected.items():
            assert result.metrics[name] == pytest.approx(value), name
    assert expected["test:recall"] > 0.8
    with open(tmp_path / "model" / "manifest.json") as f:
        assert json.load(f)["metrics"]["test:f1"] == pytest.approx(expected["test:f1"])


# ------------------------------------------------------------------------------------------------- serving


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    x, _ = planted(600, 3, 6, seed=9)
    folder = tmp_path_factory.mktemp("rcf")
    channel = write_channel(str(folder / "train"), x)
    _, model = train("randomcutforest", {"num_trees": "50", "num_samples_per_tree": "32"}, channel,
                     str(folder / "model"))
    return model, x


def test_served_scores_have_sagemakers_json_and_json_lines_shapes(small_model):
    model, x = small_model
    assert isinstance(model, RandomCutForestModel)
    expected = model.predict(Batch(x[:4]))["score"]
    app = InferenceApp(model)
    body = json.dumps({"instances": [{"features": row.tolist()} for row in x[:4]]}).encode()
    status, _, answer = call(app, "POST", "/invocations", body, [("Content-Type", "application/json")])
    doc = json.loads(answer)
    assert status == 200 and list(doc) == ["scores"] and all(list(r) == ["score"] for r in doc["scores"])
    np.testing.assert_array_equal(np.float32([r["score"] for r in doc["scores"]]), expected)
    csv = "\n".join(",".join(map(str, row.tolist())) for row in x[:4]).encode()
    status, _, answer = call(app, "POST", "/invocations", csv,
                             [("Content-Type", "text/csv"), ("Accept", "application/jsonlines")])
    lines = [json.loads(line) for line in answer.decode().splitlines()]
    assert status == 200 and [list(line) for line in lines] == [["score"]] * 4
    np.testing.assert_array_equal(np.float32([line["score"] for line in lines]), expected)
    status, _, answer = call(app, "POST", "/invocations", b"1,2\n", [("Content-Type", "text/csv")])
    assert status == 400 and b"the model expects 3 values" in answer


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_input_names_the_hyperparameter_the_feature_or_the_value(tmp_path, small_model):
    x, _ = planted(200, 3, 2, seed=10)
    channel = write_channel(str(tmp_path / "train"), x)
    with pytest.raises(ValueError, match="feature_dim is 4 but the train channel holds 3 features"):
        train("randomcutforest", {"feature_dim": "4"}, channel, str(tmp_path / "m1"))
    with pytest.raises(HyperparameterError, match=r"num_trees: must be an integer in \[50, 1000\], got '10'"):
        train("randomcutforest", {"num_trees": "10"}, channel, str(tmp_path / "m2"))
    with pytest.raises(HyperparameterError, match="eval_metrics: must be a list of"):
        train("randomcutforest", {"eval_metrics": '["auc"]'}, channel, str(tmp_path / "m3"))
    bad = x.copy()
    bad[57, 2] = np.nan
    nan_channel = write_channel(str(tmp_path / "nan"), bad, parts=1)
    with pytest.raises(ValueError, match=r"non-finite feature value \(nan\) in record 57 .* \(feature 2\)"):
        train("randomcutforest", {"num_trees": "50"}, nan_channel, str(tmp_path / "m4"))
    model, _ = small_model
    with pytest.raises(ValueError, match=r"non-finite feature value \(inf\) at row 1, feature 0"):
        model.predict(Batch(np.array([[0, 0, 0], [np.inf, 0, 0]], np.float32)))
    with pytest.raises(ValueError, match="the model expects 3 features, got 2"):
        model.predict(Batch(np.zeros((1, 2), np.float32)))
    unlabelled = write_channel(str(tmp_path / "unlabelled"), x)
    with pytest.raises(ValueError, match="the test channel has no labels"):
        train("randomcutforest", {"num_trees": "50"}, channel, str(tmp_path / "m5"), test_channel=unlabelled)

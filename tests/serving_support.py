"""Small stand-in algorithms for the serving tests, with SageMaker's response shapes.

They register as ``test-kmeans`` (closest_cluster, distance_to_cluster), ``test-linear-learner``
(binary: score, predicted_label) and ``test-pca`` (projection, envelope "projections"). Endpoint
instances are separate processes: they load this file through ``SPARK_ML_PLUGINS`` (see
:func:`plugin_env`). Each algorithm also trains, in one mergeable pass, so the classes are complete.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from algorithms.batch import Batch
from algorithms.builtin import register, save_model
from algorithms.builtin.base import MergeablePass, Model, Output
from algorithms.hyperparameters import Hyperparameter, HyperparameterSpec

PLUGIN = os.path.abspath(__file__)


def plugin_env() -> dict[str, str]:
    return {"SPARK_ML_PLUGINS": PLUGIN}


class ToyKMeansModel(Model):
    algorithm = "test-kmeans"
    outputs = (Output("closest_cluster"), Output("distance_to_cluster"))

    def __init__(self, centers: np.ndarray, hyperparameters=None):
        super().__init__(hyperparameters or {"k": str(len(centers))}, centers.shape[1])
        self.centers = np.asarray(centers, np.float32)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        x = batch.dense(np.float32)
        d2 = (x * x).sum(1)[:, None] - 2 * x @ self.centers.T + (self.centers * self.centers).sum(1)[None, :]
        closest = d2.argmin(1)
        distance = np.sqrt(np.maximum(d2[np.arange(len(x)), closest], 0))
        return {
            "closest_cluster": closest.astype(np.float32),
            "distance_to_cluster": distance.astype(np.float32),
        }

    def to_arrays(self):
        return {"centers": self.centers}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls(arrays["centers"], hyperparameters)


class ToyLinearModel(Model):
    algorithm = "test-linear-learner"
    outputs = (Output("score"), Output("predicted_label"))

    def __init__(self, weights: np.ndarray, bias: float, hyperparameters=None):
        super().__init__(hyperparameters or {"predictor_type": "binary_classifier"}, len(weights))
        self.weights = np.asarray(weights, np.float32)
        self.bias = np.float32(bias)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        margin = batch.features @ self.weights + self.bias
        score = (1.0 / (1.0 + np.exp(-np.asarray(margin, np.float64)))).astype(np.float32)
        return {"score": score, "predicted_label": (score >= 0.5).astype(np.int32)}

    def to_arrays(self):
        return {"weights": self.weights, "bias": np.array([self.bias], np.float32)}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls(arrays["weights"], float(arrays["bias"][0]), hyperparameters)


class ToyPCAModel(Model):
    algorithm = "test-pca"
    outputs = (Output("projection", "vector"),)
    json_envelope = "projections"

    def __init__(self, components: np.ndarray, mean: np.ndarray, hyperparameters=None):
        super().__init__(hyperparameters or {"num_components": str(components.shape[0])}, components.shape[1])
        self.components = np.asarray(components, np.float32)
        self.mean = np.asarray(mean, np.float32)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(batch)
        return {"projection": ((batch.dense(np.float32) - self.mean) @ self.components.T).astype(np.float32)}

    def to_arrays(self):
        return {"components": self.components, "mean": self.mean}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls(arrays["components"], arrays["mean"], hyperparameters)


class ThreadReportModel(Model):
    """Answers how many BLAS / OpenMP threads the serving process runs (read with threadpoolctl)."""

    algorithm = "test-thread-report"
    outputs = (Output("blas_threads"),)

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        from threadpoolctl import threadpool_info

        most = max([pool["num_threads"] for pool in threadpool_info()] or [0])
        return {"blas_threads": np.full(len(batch), most, np.float32)}

    def to_arrays(self):
        return {"unused": np.zeros(1, np.float32)}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls(hyperparameters, feature_dim)


class PickyModel(ToyLinearModel):
    """Like the linear model, but rejects (400) any request holding a row whose first feature is negative."""

    algorithm = "test-picky"

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        bad = np.flatnonzero(batch.dense()[:, 0] < 0)
        if len(bad):
            raise ValueError(f"row {int(bad[0])} has a negative first feature")
        return super().predict(batch)


class SlowModel(ToyLinearModel):
    """Like the linear model, but first sleeps as many seconds as the first row's first feature says, after
    writing its pid to ``$SLOW_MARKER`` (so a test knows which instance is busy)."""

    algorithm = "test-slow"

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        import time

        seconds = float(batch.dense()[0, 0]) if len(batch) else 0.0
        if seconds > 0:
            marker = os.environ.get("SLOW_MARKER")
            if marker:
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
            time.sleep(seconds)
        return super().predict(batch)


class _Moments(MergeablePass):
    """Shared training pass: feature sums, label-weighted sums and counts, merged by addition."""

    channels = ("train",)

    def init(self):
        d = self.feature_dim
        return {
            "n": np.zeros(1),
            "sum": np.zeros(d),
            "xy": np.zeros(d),
            "y": np.zeros(1),
            "xx": np.zeros((d, d)),
        }

    def update(self, state, batch):
        x = batch.dense(np.float64)
        y = np.zeros(len(x)) if batch.labels is None else np.asarray(batch.labels, np.float64).reshape(-1)
        return {
            "n": state["n"] + len(x),
            "sum": state["sum"] + x.sum(0),
            "xy": state["xy"] + x.T @ y,
            "y": state["y"] + y.sum(),
            "xx": state["xx"] + x.T @ x,
        }

    def merge(self, states):
        return {key: sum(s[key] for s in states) for key in states[0]}


@register
class ToyKMeans(_Moments):
    name = "test-kmeans"
    hyperparameters = HyperparameterSpec(
        [Hyperparameter("feature_dim", int, low=1), Hyperparameter("k", int, default=2, low=1)]
    )
    model_class = ToyKMeansModel

    def finalize(self, state):
        mean = state["sum"] / max(state["n"][0], 1)
        spread = np.sqrt(np.maximum(np.diag(state["xx"]) / max(state["n"][0], 1) - mean**2, 0))
        offsets = np.linspace(-1, 1, self.hp["k"])[:, None] * spread[None, :]
        return ToyKMeansModel(mean[None, :] + offsets)


@register
class ToyLinear(_Moments):
    name = "test-linear-learner"
    supervised = True
    hyperparameters = HyperparameterSpec([Hyperparameter("feature_dim", int, low=1)])
    model_class = ToyLinearModel

    def finalize(self, state):
        n = max(state["n"][0], 1)
        mean = state["sum"] / n
        cov = state["xx"] / n - np.outer(mean, mean) + 1e-3 * np.eye(len(mean))
        weights = np.linalg.solve(cov, state["xy"] / n - mean * state["y"][0] / n)
        return ToyLinearModel(weights, float(state["y"][0] / n - 0.5 - mean @ weights))


@register
class ToyPCA(_Moments):
    name = "test-pca"
    hyperparameters = HyperparameterSpec(
        [Hyperparameter("feature_dim", int, low=1), Hyperparameter("num_components", int, default=2, low=1)]
    )
    model_class = ToyPCAModel

    def finalize(self, state):
        n = max(state["n"][0], 1)
        mean = state["sum"] / n
        _, vectors = np.linalg.eigh(state["xx"] / n - np.outer(mean, mean))
        return ToyPCAModel(vectors[:, ::-1][:, : self.hp["num_components"]].T, mean)


@register
class ThreadReport(_Moments):
    name = "test-thread-report"
    hyperparameters = HyperparameterSpec([Hyperparameter("feature_dim", int, low=1)])
    model_class = ThreadReportModel

    def finalize(self, state):
        return ThreadReportModel({}, self.feature_dim)


@register
class Picky(ToyLinear):
    name = "test-picky"
    model_class = PickyModel

    def finalize(self, state):
        linear = super().finalize(state)
        return PickyModel(linear.weights, float(linear.bias))


@register
class Slow(ToyLinear):
    name = "test-slow"
    model_class = SlowModel

    def finalize(self, state):
        linear = super().finalize(state)
        return SlowModel(linear.weights, float(linear.bias))


def write_models(root: str, feature_dim: int = 4, seed: int = 0) -> dict[str, str]:
    """Save one model of each kind under ``root``; returns their folders by algorithm."""
    rng = np.random.default_rng(seed)
    models = {
        "test-kmeans": ToyKMeansModel(rng.normal(size=(3, feature_dim)).astype(np.float32)),
        "test-linear-learner": ToyLinearModel(rng.normal(size=feature_dim).astype(np.float32), 0.25),
        "test-pca": ToyPCAModel(
            rng.normal(size=(2, feature_dim)).astype(np.float32),
            rng.normal(size=feature_dim).astype(np.float32),
        ),
        "test-thread-report": ThreadReportModel({}, feature_dim),
        "test-picky": PickyModel(rng.normal(size=feature_dim).astype(np.float32), -0.25),
        "test-slow": SlowModel(rng.normal(size=feature_dim).astype(np.float32), 0.1),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = os.path.join(root, name)
        save_model(model, paths[name])
    return paths


# ----------------------------------------------------------------------------------------------- hosting

BYO_SERVER = '''
"""A user's own model server (stdlib only): CSV rows in, {"predictions": [{"score": row sum}]} out."""
import json, os, sys, time, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLAKY_EVERY = int(os.environ.get("FLAKY_EVERY", "0"))
count = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200 if self.path == "/ping" else 404, b"")

    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            count += 1
            flaky = FLAKY_EVERY and count % FLAKY_EVERY == 0
        if flaky:
            return self.reply(503, b'{"error": "busy, try again"}')
        if body.startswith(b"sleep"):
            time.sleep(float(body.split()[1]))
            return self.reply(200, b'{"predictions": []}')
        try:
            lines = [line for line in body.decode().splitlines() if line.strip()]
            rows = [[float(v) for v in line.split(",")] for line in lines]
        except ValueError as exc:
            return self.reply(400, json.dumps({"error": str(exc)}).encode())
        self.reply(200, json.dumps({"predictions": [{"score": sum(r)} for r in rows]}).encode())


ThreadingHTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
'''

LOAD_GENERATOR = '''
"""Steady load from another process: POSTs until a stop file appears; writes a JSON summary."""
import json, os, sys, threading, time
import requests

url, stop_file, out, threads, token = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
deadline = time.monotonic() + 120
results = {"ok": 0, "failures": [], "variants": {}}
lock = threading.Lock()


def worker():
    s = requests.Session()
    headers = {"Content-Type": "text/csv"}
    if token != "-":
        headers["Authorization"] = "Bearer " + token
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        try:
            r = s.post(url + "/invocations", data=b"1,2,3,4\\n-1,0.5,2,0\\n", headers=headers, timeout=30)
            failure = None if r.status_code == 200 else f"{r.status_code}: {r.text[:300]}"
            variant = r.headers.get("X-Invoked-Production-Variant")
        except requests.RequestException as exc:
            failure, variant = f"{type(exc).__name__}: {exc}", None
        with lock:
            if failure:
                results["failures"].append(failure)
            else:
                results["ok"] += 1
                results["variants"][variant] = results["variants"].get(variant, 0) + 1
        with open(out + ".progress", "w") as f:
            f.write(str(results["ok"]))
        time.sleep(0.002)


workers = [threading.Thread(target=worker) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
with open(out, "w") as f:
    json.dump(results, f)
'''


class HostingHome:
    """A private SPARK_ML_HOME for a test module; on exit its endpoints are deleted, even after a failure."""

    def __init__(self, path):
        self.path = str(path)

    def __enter__(self):
        self.previous = os.environ.get("SPARK_ML_HOME")
        os.environ["SPARK_ML_HOME"] = self.path
        return self

    def __exit__(self, *exc):
        import signal

        from spark_ml import hosting
        from spark_ml.endpoints.registry import Registry

        try:
            registry = Registry()
            records = registry.endpoints()
            registry.close()
            for record in records:
                try:
                    hosting.delete_endpoint(record.name, timeout=30)
                except Exception:
                    if record.supervisor_pid:
                        with contextlib.suppress(OSError):
                            os.killpg(record.supervisor_pid, signal.SIGKILL)
        finally:
            if self.previous is None:
                os.environ.pop("SPARK_ML_HOME", None)
            else:
                os.environ["SPARK_ML_HOME"] = self.previous


def wait_for(predicate, timeout=60.0, what="condition", interval=0.05):
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)

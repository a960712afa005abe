"""The model server: the ASGI app driven in-process, and the real process (python -m algorithms.serving)."""

import asyncio
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from serving_support import PLUGIN, ToyKMeansModel, ToyLinearModel, write_models

from algorithms import tensor_codec
from algorithms.batch import Batch
from algorithms.builtin import load_model
from algorithms.builtin.base import Model, Output
from algorithms.serving.app import InferenceApp
from algorithms.serving.response_records import decode_outputs


def call(app, method, path, body=b"", headers=(), chunk=65536):
    """Drive the ASGI app like a server would; returns (status, headers, body)."""
    sent = []
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)
    ]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def app():
    return InferenceApp(ToyLinearModel(np.array([1, -1, 0.5, 2], np.float32), -0.5), max_payload_bytes=4096)


def test_ping_metadata_and_unknown_routes(app):
    assert call(app, "GET", "/ping")[0] == 200
    status, _, body = call(app, "GET", "/metadata")
    meta = json.loads(body)
    assert status == 200 and meta["algorithm"] == "test-linear-learner" and meta["feature_dim"] == 4
    assert [o["name"] for o in meta["outputs"]] == ["score", "predicted_label"]
    assert json.loads(call(app, "GET", "/execution-parameters")[2])["MaxPayloadInMB"] == 1
    assert call(app, "GET", "/nope")[0] == 404
    assert call(app, "GET", "/invocations")[0] == 405


def test_invocations_answer_in_the_accepted_format(app):
    x = np.array([[1, 2, 3, 4], [0, 0, 0, 0]], np.float32)
    expected = app.model.predict(Batch(x))
    status, headers, body = call(
        app, "POST", "/invocations", b"1,2,3,4\n0,0,0,0\n", [("Content-Type", "text/csv")]
    )
    assert status == 200 and headers[b"content-type"] == b"application/json"
    got = json.loads(body)["predictions"]
    np.testing.assert_allclose([p["score"] for p in got], expected["score"], rtol=1e-6)
    status, headers, body = call(
        app,
        "POST",
        "/invocations",
        tensor_codec.encode_dense(x),
        [("Content-Type", "application/x-recordio-protobuf"), ("Accept", "application/x-recordio-protobuf")],
    )
    assert status == 200 and headers[b"content-type"] == b"application/x-recordio-protobuf"
    decoded = decode_outputs(body)
    np.testing.assert_array_equal(decoded["score"], expected["score"])
    np.testing.assert_array_equal(decoded["predicted_label"], expected["predicted_label"].astype(np.float32))


def test_limits_and_content_negotiation(app):
    big = b"1,2,3,4\n" * 1000
    status, headers, body = call(
        app, "POST", "/invocations", big, [("Content-Type", "text/csv"), ("Content-Length", str(len(big)))]
    )
    assert status == 413 and b"at most 4096" in body and headers[b"connection"] == b"close"
    status, _, body = call(app, "POST", "/invocations", big, [("Content-Type", "text/csv")], chunk=1000)
    assert status == 413  # streamed without a Content-Length
    assert call(app, "POST", "/invocations", b"1,2,3,4", [("Content-Type", "text/plain")])[0] == 415
    assert (
        call(
            app, "POST", "/invocations", b"1,2,3,4", [("Content-Type", "text/csv"), ("Accept", "image/png")]
        )[0]
        == 406
    )
    status, _, body = call(app, "POST", "/invocations", b"1,2,3\n", [("Content-Type", "text/csv")])
    assert status == 400 and "CSV row 1 has 3 values" in json.loads(body)["error"]


class Exploding(Model):
    algorithm = "test-exploding"
    outputs = (Output("score"),)

    def predict(self, batch):
        if batch.dense()[0, 0] < 0:
            raise ValueError("negative inputs are not allowed")
        if batch.dense()[0, 0] > 100:
            raise ZeroDivisionError("boom")
        return {"score": batch.dense()[:, 0]}

    def to_arrays(self):
        return {}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls(hyperparameters, feature_dim)


def test_model_errors_are_answered_and_the_app_keeps_serving():
    app = InferenceApp(Exploding({}, 2))
    ctype = [("Content-Type", "text/csv")]
    status, _, body = call(app, "POST", "/invocations", b"-1,0\n", ctype)
    assert status == 400 and "negative inputs" in json.loads(body)["error"]
    status, _, body = call(app, "POST", "/invocations", b"1000,0\n", ctype)
    assert status == 500 and "ZeroDivisionError: boom" in json.loads(body)["error"]
    status, _, body = call(app, "POST", "/invocations", b"3,0\n", ctype)
    assert status == 200 and json.loads(body) == {"predictions": [{"score": 3.0}]}


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_server_process_serves_loads_plugins_and_caps_threads(tmp_path):
    paths = write_models(str(tmp_path / "models"))
    ready = tmp_path / "ready.json"
    env = dict(os.environ, SPARK_ML_PLUGINS=PLUGIN, OMP_NUM_THREADS="4")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "algorithms.serving",
            "--model",
            paths["test-kmeans"],
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--threads",
            "1",
        ],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, what="the server to start")
        assert proc.poll() is None, proc.stderr.read().decode()
        port = json.loads(ready.read_text())["port"]
        url = f"http://127.0.0.1:{port}"
        assert requests.get(url + "/ping", timeout=5).status_code == 200
        x = np.random.default_rng(3).normal(size=(1000, 4)).astype(np.float32)
        resp = requests.post(
            url + "/invocations",
            data=tensor_codec.encode_dense(x),
            timeout=10,
            headers={
                "Content-Type": "application/x-recordio-protobuf",
                "Accept": "application/x-recordio-protobuf",
            },
        )
        assert resp.status_code == 200
        expected = load_model(paths["test-kmeans"]).predict(Batch(x))
        got = decode_outputs(resp.content)
        np.testing.assert_array_equal(got["closest_cluster"], expected["closest_cluster"])
        np.testing.assert_array_equal(got["distance_to_cluster"], expected["distance_to_cluster"])
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode in (0, -15)


def test_server_caps_blas_threads(tmp_path):
    pytest.importorskip("threadpoolctl", reason="threadpoolctl reads the BLAS thread count")
    paths = write_models(str(tmp_path / "models"))
    ready = tmp_path / "ready.json"
    env = dict(os.environ, SPARK_ML_PLUGINS=PLUGIN, OMP_NUM_THREADS="4", OPENBLAS_NUM_THREADS="4")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "algorithms.serving",
            "--model",
            paths["test-thread-report"],
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--threads",
            "1",
        ],
        env=env,
    )
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, what="the server to start")
        port = json.loads(ready.read_text())["port"]
        resp = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            data="1,2,3,4",
            timeout=10,
            headers={"Content-Type": "text/csv"},
        )
        assert resp.json() == {"predictions": [{"blas_threads": 1.0}]}
    finally:
        proc.terminate()
        proc.wait(30)


def test_server_refuses_a_folder_that_is_not_a_model(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "algorithms.serving", "--model", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "not a model artifact" in done.stderr


def test_toy_models_round_trip_through_artifacts(tmp_path):
    paths = write_models(str(tmp_path))
    model = load_model(paths["test-kmeans"])
    assert isinstance(model, ToyKMeansModel) and model.feature_dim == 4

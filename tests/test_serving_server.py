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


# ------------------------------------------------------------------------------------------ hostile requests


WIDE_ROW = ",".join(["1"] * 500_000).encode() + b"\n"  # 1 MB: under the payload limit, 500k columns


def test_a_wide_csv_row_is_refused_from_its_comma_count_before_any_parsing(monkeypatch):
    """The width is compared with the model's before any value is parsed (it cost ~14 s per 1 MB row)."""
    from algorithms.serving import decoders
    from algorithms.serving.content import MediaType
    from algorithms.serving.errors import RequestError

    def no_parsing(*args, **kwargs):
        raise AssertionError("the body was parsed before its width was checked")

    monkeypatch.setattr(decoders.pacsv, "read_csv", no_parsing)
    monkeypatch.setattr(decoders, "_small_csv", no_parsing)
    for body, label_size, what in ((WIDE_ROW, 0, "4 values"), (b"\n  \n" + WIDE_ROW, 0, "4 values"),
                                   (WIDE_ROW, 1, r"5 values \(1 label \+ 4 features\)"),
                                   (WIDE_ROW.rstrip(b"\n") + b"\r1,2,3,4\r", 0, "4 values")):
        media = MediaType("text/csv", {"label_size": str(label_size)})
        with pytest.raises(RequestError, match=rf"CSV row 1 has 500000 values; the model expects {what}") as err:
            decoders.decode_request(body, media, 4)
        assert err.value.status == 400
    monkeypatch.undo()
    second = b"1,2,3,4\n" + WIDE_ROW  # a later row: found by the reader's own column check, named all the same
    with pytest.raises(RequestError, match=r"CSV row 2 has 500000 values; the model expects 4 values"):
        decoders.decode_request(second, MediaType("text/csv"), 4)


def test_wide_json_rows_are_refused_before_conversion():
    import orjson

    from algorithms.serving.content import MediaType
    from algorithms.serving.decoders import decode_request
    from algorithms.serving.errors import RequestError

    cases = [(orjson.dumps({"instances": [[1.0] * 4, [1.0] * 500_000]}), "application/json",
              r"instances\[1\] has 500000 features; the model expects 4"),
             (b'{"features": [1, 2, 3, 4]}\n' + orjson.dumps({"features": [0] * 500_000}), "application/jsonlines",
              r"line 2 has 500000 features; the model expects 4"),
             (orjson.dumps({"instances": [{"data": {"features": {"keys": list(range(9)), "values": [1.0] * 9,
                                                                  "shape": [4]}}}]}), "application/json",
              r"instances\[0\]: sparse shape \[4\] does not match|instances\[0\]: 9 sparse keys")]
    for body, ctype, message in cases:
        with pytest.raises(RequestError, match=message):
            decode_request(body, MediaType(ctype), 4)


class Gated(Model):
    """Answers only once the test opens its gate: a request that takes as long as the test wants."""

    algorithm = "test-gated"
    outputs = (Output("score"),)

    def __init__(self):
        super().__init__({}, 2)
        import threading

        self.gate = threading.Event()

    def predict(self, batch):
        assert self.gate.wait(20), "the gate was never opened"
        return {"score": batch.dense()[:, 0]}

    def to_arrays(self):
        return {}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters, feature_dim):
        return cls()


def test_ping_is_answered_while_an_invocation_computes():
    """/ping and the invocation in one event loop: the ping must finish first, while predict still waits."""
    import threading

    model = Gated()
    app = InferenceApp(model)
    finished = []
    opener = threading.Timer(10, model.gate.set)  # a server that blocks its loop gets unstuck, and fails below
    opener.start()

    async def request(method, path, body=b"", headers=()):
        sent = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop(0)
            await asyncio.Event().wait()  # the client stays connected

        async def send(message):
            sent.append(message)

        await app({"type": "http", "method": method, "path": path, "headers": list(headers)}, receive, send)
        finished.append(path)
        return sent[0]["status"]

    async def scenario():
        invocation = asyncio.ensure_future(request("POST", "/invocations", b"1,2\n", [(b"content-type", b"text/csv")]))
        await asyncio.sleep(0)  # the invocation starts first
        ping = await request("GET", "/ping")
        model.gate.set()
        return ping, await invocation

    try:
        assert asyncio.run(scenario()) == (200, 200)
    finally:
        opener.cancel()
        model.gate.set()
    assert finished == ["/ping", "/invocations"]


def test_the_server_process_stays_healthy_under_wide_rows_and_slow_requests(tmp_path):
    import threading

    paths = write_models(str(tmp_path / "models"))
    ready, marker = tmp_path / "ready.json", tmp_path / "slow.pid"
    env = dict(os.environ, SPARK_ML_PLUGINS=PLUGIN, SLOW_MARKER=str(marker))
    proc = subprocess.Popen([sys.executable, "-m", "algorithms.serving", "--model", paths["test-slow"], "--port", "0",
                             "--ready-file", str(ready)], env=env, stderr=subprocess.PIPE)
    csv = {"Content-Type": "text/csv"}
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, what="the server to start")
        assert proc.poll() is None, proc.stderr.read().decode()
        url = f"http://127.0.0.1:{json.loads(ready.read_text())['port']}"
        wide = requests.post(url + "/invocations", data=WIDE_ROW, headers=csv, timeout=60)
        assert wide.status_code == 400
        assert wide.json()["error"].startswith("CSV row 1 has 500000 values; the model expects 4 values")
        box = {}
        slow = threading.Thread(target=lambda: box.update(r=requests.post(url + "/invocations", data="4,0,0,0\n",
                                                                           headers=csv, timeout=60)))
        slow.start()
        wait_for(marker.exists, what="the slow request to reach the model")
        assert requests.get(url + "/ping", timeout=2).status_code == 200  # the supervisor's ping deadline
        assert slow.is_alive()  # answered while the slow request was still computing
        slow.join(60)
        assert box["r"].status_code == 200
        model = load_model(paths["test-slow"])
        want = model.predict(Batch(np.array([[0.5, 1, 2, 3]], np.float32)))["score"][0]
        quick = requests.post(url + "/invocations", data="0.5,1,2,3\n", headers=csv, timeout=10)
        assert quick.status_code == 200 and quick.json()["predictions"][0]["score"] == pytest.approx(want, rel=1e-6)
    finally:
        proc.terminate()
        proc.wait(30)

"""A tiny, test-only server that honours SageMaker's serving contract for one model artifact.

It exists so the JVM ``EndpointModel`` can be tested before ``algorithms/serving`` is on main: ``POST
/invocations`` decodes text/csv, application/json, application/jsonlines, text/libsvm and
application/x-recordio-protobuf with the library's own codecs, scores with ``load_model(path).predict`` and
answers in SageMaker's shapes (JSON ``{"predictions"|"projections": [...]}``, JSON Lines, CSV, or one
recordIO-protobuf Record per row with the outputs under ``label[<name>]``); ``GET /metadata`` lists the
outputs. It records what it was sent, can refuse requests with chosen statuses, and can hold requests until a
number of them are in flight at once. Loopback only.
"""

from __future__ import annotations

import io
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import scipy.sparse as sp

from algorithms import tensor_codec
from algorithms.batch import Batch
from algorithms.builtin import load_model
from algorithms.proto import Record
from algorithms.recordio import frame


@dataclass
class Seen:
    content_type: str
    accept: str
    headers: dict[str, str]
    body: bytes
    rows: int


@dataclass
class ContractServer:
    model_dir: str
    token: str | None = None
    variant: str = "AllTraffic"
    failures: deque = field(default_factory=deque)  # (status, retry_after or None) answered before scoring
    hold_until: int = 0  # the first requests wait until this many are in flight at once (or 30 s pass)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self):
        self.model = load_model(self.model_dir)
        self.lock = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/metadata":
                    return self.answer(404, b"no route", "text/plain")
                outputs = [{"name": o.name, "kind": o.kind} for o in server.model.outputs]
                doc = {"algorithm": server.model.algorithm, "feature_dim": server.model.feature_dim,
                       "outputs": outputs}
                self.answer(200, json.dumps(doc).encode(), "application/json")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.enter()
                try:
                    self.invoke(body)
                finally:
                    server.leave()

            def invoke(self, body: bytes):
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self.answer(401, b"missing or wrong bearer token", "text/plain")
                with server.lock:
                    failure = server.failures.popleft() if server.failures else None
                if failure is not None:
                    status, retry_after = failure
                    extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                    return self.answer(status, f"injected {status}".encode(), "text/plain", extra)
                content_type = self.headers.get("Content-Type", "")
                accept = self.headers.get("Accept", "application/json")
                try:
                    features = decode(body, content_type, server.model.feature_dim)
                    outputs = server.model.predict(Batch(features))
                except ValueError as exc:
                    return self.answer(400, f"the model rejected the request: {exc}".encode(), "text/plain")
                except Exception as exc:  # noqa: BLE001 - a server bug must show up as an answer, not a hang-up
                    return self.answer(500, f"{type(exc).__name__}: {exc}".encode(), "text/plain")
                with server.lock:
                    server.seen.append(Seen(content_type, accept, dict(self.headers), body, features.shape[0]))
                variant = self.headers.get("X-Target-Variant") or server.variant
                self.answer(200, encode(outputs, server.model, accept), accept,
                            {"X-Invoked-Production-Variant": variant})

            def answer(self, status: int, body: bytes, content_type: str, extra: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.hold_until:
                self.lock.wait_for(lambda: self.max_in_flight >= self.hold_until, timeout=30)
                self.hold_until = 0  # later requests pass straight through
                self.lock.notify_all()

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------------------------------------ codecs


def decode(body: bytes, content_type: str, dim: int):
    kind = content_type.split(";")[0].strip()
    if kind == "application/x-recordio-protobuf":
        return tensor_codec.decode(body, "request", dim).features
    text = body.decode()
    if kind == "text/csv":
        return np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2, dtype=np.float32)
    if kind == "application/json":
        return _instances(json.loads(text)["instances"], dim)
    if kind == "application/jsonlines":
        return _instances([json.loads(line) for line in text.splitlines() if line.strip()], dim)
    if kind == "text/libsvm":
        rows, cols, vals = [], [], []
        lines = [line for line in text.splitlines() if line.strip()]
        for i, line in enumerate(lines):
            for item in line.split()[1:]:
                k, v = item.split(":")
                rows.append(i)
                cols.append(int(k) - 1)
                vals.append(float(v))
        return sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(len(lines), dim))
    raise ValueError(f"unsupported Content-Type {content_type!r}")


def _instances(instances: list, dim: int):
    """SageMaker's JSON instances, dense ``{"features": [...]}`` or sparse ``{"data": {"features": {...}}}``."""
    if all("features" in inst for inst in instances):
        return np.asarray([inst["features"] for inst in instances], np.float32).reshape(len(instances), -1)
    rows, cols, vals = [], [], []
    for i, inst in enumerate(instances):
        if "features" in inst:
            keys, values = list(range(len(inst["features"]))), inst["features"]
        else:
            tensor = inst["data"]["features"]
            if tensor["shape"] != [dim]:
                raise ValueError(f"the model expects {dim} features, got {tensor['shape']}")
            keys, values = tensor["keys"], tensor["values"]
        rows += [i] * len(keys)
        cols += keys
        vals += values
    return sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(len(instances), dim))


def encode(outputs: dict[str, np.ndarray], model, accept: str) -> bytes:
    names = [o.name for o in model.outputs]
    n = len(next(iter(outputs.values())))
    columns = {name: np.asarray(outputs[name], np.float32).reshape(n, -1) for name in names}
    kinds = {o.name: o.kind for o in model.outputs}

    def value(name, i):
        row = columns[name][i].tolist()
        return row if kinds[name] == "vector" else row[0]

    records = [{name: value(name, i) for name in names} for i in range(n)]
    if accept == "application/json":
        return json.dumps({model.json_envelope: records}).encode()
    if accept == "application/jsonlines":
        return "".join(json.dumps(r) + "\n" for r in records).encode()
    if accept == "text/csv":
        return "".join(",".join(repr(v) for name in names for v in columns[name][i].tolist()) + "\n"
                       for i in range(n)).encode()
    if accept == "application/x-recordio-protobuf":
        out = b""
        for i in range(n):
            record = Record()
            for name in names:
                record.label[name].float32_tensor.values.extend(columns[name][i].tolist())
            out += frame(record.SerializeToString())
        return out
    raise ValueError(f"cannot answer in {accept}")

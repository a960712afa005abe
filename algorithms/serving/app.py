"""The model server as a bare ASGI application: SageMaker's serving contract over one loaded Model.

No web framework: routing four paths by hand keeps a single-row request near the server's own cost
(the reference measured bare ASGI at 2-3x FastAPI's throughput for trivial models). Decoding, ``predict``
and encoding run on one compute thread beside the event loop, one request at a time (the process has one
core's worth of BLAS threads; ``MaxConcurrentTransforms`` is 1): the loop stays free to answer ``/ping``
while a request computes, so one slow request never makes the supervisor think the instance is dead and
kill it with every request it holds. A bad request gets a 4xx naming what is wrong; the process keeps
serving whatever the request held.
"""

from __future__ import annotations

import logging
import sys
import traceback

import orjson

from ..batch import Batch
from ..builtin.base import Model
from .codecs import codec_for
from .compute import ComputeThread
from .content import MediaType, accept_parameters, request_media_type
from .encoders import encode_response
from .errors import RequestError
from .http import ClientDisconnected, read_body, respond, respond_error

log = logging.getLogger("algorithms.serving")

DEFAULT_MAX_PAYLOAD = 6 * 1024 * 1024  # SageMaker's real-time limit is about 6 MB


def model_metadata(model: Model) -> dict:
    """What a client needs to read this model's responses (the Spark side builds its schema from it)."""
    codec = codec_for(model)
    return {
        "algorithm": model.algorithm,
        "feature_dim": model.feature_dim,
        "outputs": [{"name": o.name, "kind": o.kind, "dtype": o.dtype} for o in model.outputs],
        "json_envelope": model.json_envelope,
        "request_content_types": list(codec.request_types),
        "response_content_types": list(codec.response_types),
    }


class InferenceApp:
    """ASGI app: ``/ping``, ``POST /invocations``, ``/metadata``, ``/execution-parameters``."""

    def __init__(self, model: Model, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD):
        self.model = model
        self.codec = codec_for(model)
        self.max_payload_bytes = int(max_payload_bytes)
        self.compute = ComputeThread()  # requests compute there, in arrival order; the loop answers /ping
        self.metadata = orjson.dumps(model_metadata(model))
        self.execution_parameters = orjson.dumps(
            {
                "MaxConcurrentTransforms": 1,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": max(1, self.max_payload_bytes // (1024 * 1024)),
            }
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            self.compute.shutdown()  # after uvicorn let the requests in flight finish
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        try:
            if path == "/invocations":
                if method != "POST":
                    raise RequestError(405, "use POST /invocations")
                await self.invoke(scope, receive, send)
            elif path == "/ping":
                await respond(send, 200, b"", b"text/plain")
            elif path == "/metadata":
                await respond(send, 200, self.metadata)
            elif path == "/execution-parameters":
                await respond(send, 200, self.execution_parameters)
            else:
                raise RequestError(404, f"no route {path}; this server answers /ping and /invocations")
        except RequestError as exc:
            await respond_error(send, exc.status, exc.message)
        except ClientDisconnected:
            return

    async def invoke(self, scope, receive, send) -> None:
        headers = dict(scope["headers"])
        media = request_media_type(_text(headers.get(b"content-type")))
        accept_header = _text(headers.get(b"accept"))
        accept = self.negotiate(media, accept_header)
        body = await read_body(receive, headers, self.max_payload_bytes)
        answer = await self.compute.run(self.answer, body, media, accept, accept_parameters(accept_header, accept))
        await respond(send, 200, answer, accept.encode())

    def negotiate(self, media: MediaType, accept: str | None) -> str:
        """The response's content type (the model's codec decides; 406 when it cannot answer as asked)."""
        return self.codec.response_type(media, accept)

    def answer(self, body: bytes, media: MediaType, accept: str, accept_params: dict[str, str] | None = None) -> bytes:
        """The response body for a request body (over HTTP or handed over, see handoff.py); RequestError.
        ``accept_params`` are the chosen Accept type's parameters (k-NN's ``verbose=true``)."""
        if len(body) > self.max_payload_bytes:
            raise RequestError(413, f"the body is {len(body)} bytes; this endpoint accepts at most "
                                    f"{self.max_payload_bytes}")
        return self.codec.answer(body, media, accept, accept_params or {})


def predict(model: Model, batch: Batch, accept: str) -> bytes:
    """Run the model on the batch and encode; bad input the model itself rejects is a 400, a crash (or
    outputs that cannot be encoded: the model's fault, not the request's) a 500."""
    try:
        outputs = model.predict(batch) if batch.num_rows else _empty_outputs(model)
    except ValueError as exc:
        raise RequestError(400, f"the model rejected the request: {exc}") from None
    except Exception as exc:  # a model bug must not take the process down
        traceback.print_exc(file=sys.stderr)
        raise RequestError(500, f"the model failed: {type(exc).__name__}: {exc}") from None
    try:
        return encode_response(outputs, model.outputs, model.json_envelope, accept, batch.num_rows)
    except Exception as exc:  # noqa: BLE001 - reported as the server's failure
        traceback.print_exc(file=sys.stderr)
        raise RequestError(500, f"the model's outputs cannot be encoded: {type(exc).__name__}: {exc}") from None


def _empty_outputs(model: Model) -> dict:
    import numpy as np

    return {o.name: np.zeros(0, np.float32) for o in model.outputs}


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")

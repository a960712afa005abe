"""Bare ASGI request/response helpers shared by the model server and the endpoint router (no numpy here)."""

from __future__ import annotations

import orjson

from .errors import RequestError


class ClientDisconnected(Exception):
    pass


async def read_body(receive, headers: dict, limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise RequestError(413, f"the body is {size} bytes; this endpoint accepts at most {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body exceeds {limit} bytes, the most this endpoint accepts")
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(
    send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_error(send, status: int, message: str) -> None:
    extra = [(b"connection", b"close")] if status == 413 else None
    await respond(send, status, orjson.dumps({"error": message}), extra=extra)

"""Errors a request can earn, each with the HTTP status the server answers."""

from __future__ import annotations


class RequestError(Exception):
    """A request the server rejects; ``status`` is the HTTP status (400, 406, 413, 415)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> RequestError:
    return RequestError(400, message)

"""How a model's requests are read and its answers written: SageMaker's numeric formats for most models,
or a model's own codec when its records are not rows of numbers (Seq2Seq's token sequences).

A codec decides three things: which content types it reads, which response type a request gets (its
content negotiation), and the response body for a request body. :class:`NumericCodec` is the generic path
(rows → :class:`~algorithms.batch.Batch` → ``Model.predict`` → SageMaker's response shapes). A model with
other formats returns its own codec from ``serving_codec()``; the HTTP app and the shared-memory handoff
both go through :func:`codec_for`, so they answer alike whichever codec a model has.
"""

from __future__ import annotations

from typing import Protocol

from ..builtin.base import Model
from .content import REQUEST_TYPES, RESPONSE_TYPES, MediaType, choose_response_type


class ModelCodec(Protocol):
    request_types: tuple[str, ...]
    response_types: tuple[str, ...]

    def response_type(self, media: MediaType, accept: str | None) -> str:
        """The response's content type for a request of ``media`` and an ``Accept`` header; RequestError 406."""

    def answer(self, body: bytes, media: MediaType, accept: str, accept_params: dict[str, str]) -> bytes:
        """The response body; RequestError (400, 415) for requests it cannot answer. ``accept_params``: the
        chosen Accept type's parameters (e.g. k-NN's ``verbose=true``)."""


class NumericCodec:
    """SageMaker's numeric formats: CSV, JSON, JSON Lines, recordIO-protobuf, libsvm rows in; the model's
    outputs in SageMaker's response shapes out."""

    request_types = REQUEST_TYPES
    response_types = RESPONSE_TYPES

    def __init__(self, model: Model):
        self.model = model

    def response_type(self, media: MediaType, accept: str | None) -> str:
        return choose_response_type(accept)

    def answer(self, body: bytes, media: MediaType, accept: str, accept_params: dict[str, str]) -> bytes:
        from .app import predict
        from .decoders import decode_request

        model = self.model.for_accept(accept_params) if accept_params else self.model
        return predict(model, decode_request(body, media, self.model.feature_dim), accept)


def codec_for(model: Model) -> ModelCodec:
    own = getattr(model, "serving_codec", None)
    return own() if own is not None else NumericCodec(model)

"""Seq2Seq's inference formats (SageMaker's), as a serving codec the model server uses for this model.

- ``application/json``: ``{"instances": [{"data": "tokens …", "configuration": {"attention_matrix": "true"}}]}``
  → ``{"predictions": [{"target": "tokens …", "matrix": [[…], …]}]}`` (``matrix`` only when asked: one row per
  target token, one column per source token).
- ``application/jsonlines``: ``{"source": "tokens …"}`` per line → ``{"target": "tokens …"}`` per line.
- ``application/x-recordio-protobuf``: records with int32 ``features["source"]`` ids → records with int32
  ``features["target"]`` ids.

As SageMaker's, the answer comes in the request's content type (an ``Accept`` naming another type gets
406). Sources longer than ``max_seq_len_source`` tokens are truncated to it; tokens not in the source
vocabulary read as ``<unk>``; a malformed body gets a 400 naming the instance, line or record at fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import orjson

from ...serving.content import JSON, JSONLINES, RECORDIO_PROTOBUF, MediaType, parse_media_type
from ...serving.errors import RequestError, bad_request
from . import records

if TYPE_CHECKING:
    from .model import Seq2SeqModel

TYPES = (JSON, JSONLINES, RECORDIO_PROTOBUF)


class Seq2SeqCodec:
    request_types = TYPES
    response_types = TYPES

    def __init__(self, model: Seq2SeqModel):
        self.model = model

    def response_type(self, media: MediaType, accept: str | None) -> str:
        if media.type not in TYPES:
            raise RequestError(415, f"Seq2Seq reads {', '.join(TYPES)}, not {media.type}")
        if not accept or not accept.strip():
            return media.type
        for item in accept.split(","):
            kind = parse_media_type(item).type
            if kind in (media.type, "*/*", "application/*"):
                return media.type
        raise RequestError(406, f"Seq2Seq answers in the request's content type ({media.type}); Accept "
                                f"{accept!r} does not allow it")

    def answer(self, body: bytes, media: MediaType, accept: str, accept_params: dict[str, str]) -> bytes:
        if media.type == JSON:
            return self._json(body)
        if media.type == JSONLINES:
            return self._jsonlines(body)
        if media.type == RECORDIO_PROTOBUF:
            return self._protobuf(body)
        raise RequestError(415, f"Seq2Seq reads {', '.join(TYPES)}, not {media.type}")

    # ------------------------------------------------------------------------------------------------------
    def _translate(self, texts: list[str], attention: list[bool]):
        model = self.model
        sources = [model.source_vocab.encode(model.tokenizer.split(t)) for t in texts]
        wanted = [i for i, a in enumerate(attention) if a]
        out = [None] * len(texts)
        plain = [i for i, a in enumerate(attention) if not a]
        for rows, with_matrix in ((plain, False), (wanted, True)):
            if rows:
                for i, t in zip(rows, model.translate_ids([sources[i] for i in rows], attention=with_matrix),
                                strict=True):
                    out[i] = t
        return out

    def _json(self, body: bytes) -> bytes:
        try:
            doc = orjson.loads(bytes(body))
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"the body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
            raise bad_request('a Seq2Seq JSON request is {"instances": [{"data": "tokens ...", '
                              '"configuration": {"attention_matrix": "true"}}, ...]}')
        texts, attention = [], []
        for i, item in enumerate(doc["instances"]):
            if not isinstance(item, dict) or not isinstance(item.get("data"), str):
                raise bad_request(f'instances[{i}] must be an object with "data": a string of tokens')
            config = item.get("configuration") or {}
            if not isinstance(config, dict):
                raise bad_request(f'instances[{i}]: "configuration" must be an object')
            texts.append(item["data"])
            attention.append(_flag(config.get("attention_matrix", False), f"instances[{i}]"))
        predictions = []
        for t, wants in zip(self._translate(texts, attention), attention, strict=True):
            prediction = {"target": self.model.target_text(t.tokens)}
            if wants:
                prediction["matrix"] = t.attention
            predictions.append(prediction)
        return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)

    def _jsonlines(self, body: bytes) -> bytes:
        texts = []
        for number, line in enumerate(bytes(body).split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise bad_request(f"JSON Lines line {number} is not valid JSON: {exc}") from None
            if not isinstance(item, dict) or not isinstance(item.get("source"), str):
                raise bad_request(f'JSON Lines line {number} must be {{"source": "tokens ..."}}')
            texts.append(item["source"])
        translations = self._translate(texts, [False] * len(texts))
        return b"".join(orjson.dumps({"target": self.model.target_text(t.tokens)}) + b"\n" for t in translations)

    def _protobuf(self, body: bytes) -> bytes:
        try:
            sources = records.decode(np.frombuffer(body, np.uint8).copy(), keys=(records.SOURCE,),
                                     source="request body")[records.SOURCE]
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        size = len(self.model.source_vocab)
        for i, ids in enumerate(sources):
            if len(ids) and (ids.min() < 0 or ids.max() >= size):
                raise bad_request(f"request body: record {i} has source token id "
                                  f"{int(ids[(ids < 0) | (ids >= size)][0])}, outside the source vocabulary "
                                  f"(0..{size - 1})")
        if not sources:
            return b""
        translations = self.model.translate_ids(sources)
        return records.encode(target=[np.asarray(t.tokens, np.int64) for t in translations])


def _flag(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise bad_request(f'{where}: configuration.attention_matrix must be "true" or "false", got '
                      f"{orjson.dumps(value).decode()}")

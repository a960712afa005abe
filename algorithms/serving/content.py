"""Content types of requests and responses: parsing ``Content-Type`` and choosing from ``Accept``."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import RequestError

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
RECORDIO_PROTOBUF = "application/x-recordio-protobuf"
LIBSVM = "text/libsvm"

_ALIASES = {
    "application/jsonl": JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "application/json-lines": JSONLINES,
    "text/x-libsvm": LIBSVM,
    "application/x-protobuf": RECORDIO_PROTOBUF,
}
REQUEST_TYPES = (CSV, JSON, JSONLINES, RECORDIO_PROTOBUF, LIBSVM)
RESPONSE_TYPES = (JSON, JSONLINES, RECORDIO_PROTOBUF, CSV)


@dataclass(frozen=True)
class MediaType:
    """A media type without parameters (``text/csv``) and its parameters (``{"label_size": "0"}``)."""

    type: str
    params: dict[str, str] = field(default_factory=dict)


def parse_media_type(header: str | None) -> MediaType:
    if not header:
        return MediaType("")
    head, *rest = header.split(";")
    params = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    kind = head.strip().lower()
    return MediaType(_ALIASES.get(kind, kind), params)


def request_media_type(header: str | None) -> MediaType:
    """The request's media type; 415 when the server cannot read it."""
    media = parse_media_type(header)
    if not media.type:
        raise RequestError(415, f"the request has no Content-Type; send one of {', '.join(REQUEST_TYPES)}")
    if media.type not in REQUEST_TYPES:
        raise RequestError(
            415, f"unsupported Content-Type {media.type!r}; send one of {', '.join(REQUEST_TYPES)}"
        )
    charset = media.params.get("charset")
    if charset and charset.lower().replace("-", "") not in ("utf8", "usascii"):
        raise RequestError(415, f"unsupported charset {charset!r}; send UTF-8")
    return media


def accept_parameters(accept: str | None, chosen: str) -> dict[str, str]:
    """The parameters (other than ``q``) of the ``Accept`` entry that named ``chosen``, e.g. ``{"verbose": "true"}``
    for ``application/json; verbose=true``; empty when a wildcard or nothing chose it."""
    for item in (accept or "").split(","):
        media = parse_media_type(item)
        if media.type == chosen:
            return {key: value for key, value in media.params.items() if key != "q"}
    return {}


def choose_response_type(accept: str | None, default: str = JSON) -> str:
    """The best response type the client accepts (q-values honoured); 406 when there is none."""
    if not accept or not accept.strip():
        return default
    candidates: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept.split(",")):
        media = parse_media_type(item)
        if not media.type:
            continue
        try:
            quality = float(media.params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0:
            candidates.append((-quality, position, media.type))
    for _, _, kind in sorted(candidates):
        if kind in RESPONSE_TYPES:
            return kind
        if kind in ("*/*", "application/*") or (kind == "text/*" and default == CSV):
            return default
        if kind == "text/*":
            return CSV
    raise RequestError(406, f"cannot answer in {accept!r}; Accept one of {', '.join(RESPONSE_TYPES)}")

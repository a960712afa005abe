"""Calling an endpoint: by registry name or URL, with the bearer token, the target variant and retries."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import requests

from .metrics import VariantMetrics, parse

_local = threading.local()


class InvocationError(RuntimeError):
    """The endpoint answered with an error status; ``status`` and ``body`` say which and why."""

    def __init__(self, status: int, body: bytes, variant: str | None):
        self.status, self.body, self.variant = status, body, variant
        text = body.decode("utf-8", "replace")[:2000]
        super().__init__(
            f"endpoint answered {status}" + (f" (variant {variant})" if variant else "") + f": {text}"
        )


@dataclass
class Invocation:
    body: bytes
    content_type: str
    variant: str | None
    status: int


@dataclass(frozen=True)
class Target:
    """Where to send requests: the endpoint's base URL and its token (None when not needed)."""

    url: str
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def resolve_endpoint(endpoint: str | Target, token: str | None = None) -> Target:
    """Where an endpoint is reached: a registry endpoint name (its URL and token), or an ``http(s)://`` URL."""
    if isinstance(endpoint, Target):
        return endpoint
    if endpoint.startswith(("http://", "https://")):
        return Target(endpoint.rstrip("/"), token)
    from .registry import Registry

    registry = Registry()
    try:
        record = registry.endpoint(endpoint)
    finally:
        registry.close()
    if not record.url or record.status not in ("InService", "Updating", "SystemUpdating"):
        raise RuntimeError(f"endpoint {endpoint} is {record.status}; it cannot take requests")
    return Target(record.url, token or record.token)


def invocation_headers(
    target: Target,
    content_type: str,
    accept: str | None = None,
    target_variant: str | None = None,
    custom_attributes: str | None = None,
) -> dict[str, str]:
    """The headers of a ``POST /invocations`` (SageMaker's names for the variant and custom attributes)."""
    headers = {"Content-Type": content_type, **target.headers()}
    if accept:
        headers["Accept"] = accept
    if target_variant:
        headers["X-Target-Variant"] = target_variant
    if custom_attributes:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
    return headers


def session() -> requests.Session:
    """One pooled keep-alive session per thread."""
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
    return s


def invoke_endpoint(
    endpoint: str | Target,
    body: bytes | str,
    content_type: str,
    accept: str | None = None,
    target_variant: str | None = None,
    custom_attributes: str | None = None,
    timeout: float = 60.0,
    token: str | None = None,
) -> Invocation:
    """POST one request to ``/invocations``; raises :class:`InvocationError` for a non-2xx answer."""
    target = resolve_endpoint(endpoint, token)
    headers = invocation_headers(target, content_type, accept, target_variant, custom_attributes)
    data = body.encode() if isinstance(body, str) else body
    resp = session().post(target.url + "/invocations", data=data, headers=headers, timeout=timeout)
    variant = resp.headers.get("X-Invoked-Production-Variant")
    if resp.status_code >= 300:
        raise InvocationError(resp.status_code, resp.content, variant)
    return Invocation(resp.content, resp.headers.get("Content-Type", ""), variant, resp.status_code)


def endpoint_metrics(
    endpoint: str | Target, token: str | None = None, timeout: float = 10.0
) -> dict[str, VariantMetrics]:
    """Per-variant invocations, errors and latencies from the endpoint's ``/metrics``."""
    target = resolve_endpoint(endpoint, token)
    resp = session().get(target.url + "/metrics", headers=target.headers(), timeout=timeout)
    resp.raise_for_status()
    return parse(resp.text)


def endpoint_metadata(endpoint: str | Target, token: str | None = None, timeout: float = 30.0) -> dict:
    """``{variant: model metadata}`` (algorithm, feature_dim, outputs) as each variant reports it."""
    target = resolve_endpoint(endpoint, token)
    resp = session().get(target.url + "/metadata", headers=target.headers(), timeout=timeout)
    if resp.status_code == 404:
        raise RuntimeError(
            f"{target.url} has no /metadata (not a spark_ml endpoint); give the deserializer "
            "its outputs explicitly"
        )
    resp.raise_for_status()
    doc = resp.json()
    return doc.get("variants", {"": doc}) if "variants" in doc else {"": doc}

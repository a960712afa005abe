"""Scoring feature columns through an endpoint over HTTP: batch, send concurrently, retry, bisect, reassemble.

This is the engine under :class:`~spark_ml.hosting.transformer.EndpointModel`, kept apart from it and
free of Spark so that anything holding Arrow feature columns (a Spark partition, a pandas batch job)
can score through an endpoint the same way. Per column: encode every row once with the serializer,
cut requests at row boundaries by count and by bytes, keep at most ``concurrency`` in flight (across
columns, so a partition of small batches still fills the pipe), retry 5xx / 429 / connection errors
with exponential backoff and jitter, and, when errors go to a column, bisect a batch the endpoint
rejected (400 / 413) so only the rows at fault are marked. Output columns come back in input order.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import requests

from ..arrow_vectors import dense_to_arrow, vectors_from_arrow
from ..endpoints.client import Target, invocation_headers, session
from .serializers import RequestSerializer, ResponseDeserializer, SerializedRows

DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # sagemaker-spark's batch limit, under the endpoint's 6 MiB
RETRYABLE = (429, 500, 502, 503, 504)
# Answers the rows themselves can cause (unparsable row, body too large): worth splitting the batch to find
# the rows at fault. Others (auth, 404, 429 after retries) would fail every half the same way.
ROW_FAULT_STATUSES = (400, 413)
CONNECTION_FAILED = 599  # our own marker while retrying; reported as 503 once the retries are spent


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str = "scalar"  # "scalar" | "vector"


def outputs_from_metadata(metadata: dict[str, dict], variant: str | None = None) -> list[OutputSpec]:
    """Union of the variants' outputs (in first-seen order); a variant whose metadata failed is an error."""
    specs: dict[str, OutputSpec] = {}
    for name, meta in metadata.items():
        if variant and name != variant:
            continue
        if "error" in meta:
            raise RuntimeError(
                f"cannot read variant {name}'s outputs: {meta['error']}; set outputs= explicitly"
            )
        for o in meta["outputs"]:
            spec = OutputSpec(o["name"], o.get("kind", "scalar"))
            if specs.setdefault(spec.name, spec).kind != spec.kind:
                raise RuntimeError(f"output {spec.name} is a scalar in one variant and a vector in another")
    if not specs:
        raise RuntimeError(f"no variant{' ' + variant if variant else ''} reported outputs")
    return list(specs.values())


class EndpointCallError(RuntimeError):
    pass


@dataclass
class Segment:
    """The answer for rows ``start:stop`` of one column: outputs, or the error that replaced them."""

    start: int
    stop: int
    outputs: dict[str, np.ndarray] | None = None
    variant: str | None = None
    error: str | None = None


@dataclass
class ScoringPlan:
    """Everything scoring needs, decided once on the driver (it is pickled to the executors)."""

    target: Target
    features_index: int
    features_col: str
    serializer: RequestSerializer
    deserializer: ResponseDeserializer
    outputs: list[OutputSpec]
    max_rows: int
    max_bytes: int
    concurrency: int
    max_retries: int
    backoff: float
    timeout: float
    error_column: str | None
    variant_column: str | None
    target_variant: str | None = None
    headers: dict = field(default_factory=dict)

    def run(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """``mapInArrow`` form: whole record batches in, the same batches plus the output columns out."""
        items = ((batch, batch.column(self.features_index), batch.num_rows) for batch in batches)
        for batch, (columns, names) in self._score(items):
            yield pa.RecordBatch.from_arrays(list(batch.columns) + columns, names=list(batch.schema.names) + names)

    def run_columns(self, arrays: Iterable[pa.Array]) -> Iterator[pa.StructArray]:
        """Arrow iterator-UDF form: features arrays in, structs of the output columns out (in order)."""
        for _, (columns, names) in self._score((None, a, len(a)) for a in arrays):
            yield pa.StructArray.from_arrays(columns, names=names)

    def _score(self, items):
        """(tag, features column, rows) in; (tag, (output columns, names)) out in input order, requests to the
        endpoint running ``concurrency`` at a time across item boundaries."""
        self.headers = invocation_headers(
            self.target, self.serializer.content_type, self.deserializer.accept, self.target_variant
        )
        pending: deque = deque()
        with ThreadPoolExecutor(self.concurrency) as pool:
            for tag, column, n in items:
                entry = {"tag": tag, "rows": n, "futures": [], "sealed": False}
                pending.append(entry)
                if n:
                    rows = self.serializer.serialize(vectors_from_arrow(column, self.features_col).matrix)
                    for start, stop in self.cut(rows):
                        in_flight = [f for e in pending for f in e["futures"] if not f.done()]
                        if len(in_flight) >= self.concurrency:
                            wait(in_flight, return_when=FIRST_COMPLETED)
                        entry["futures"].append(pool.submit(self.call, rows, start, stop))
                entry["sealed"] = True
                while pending and pending[0]["sealed"] and all(f.done() for f in pending[0]["futures"]):
                    entry = pending.popleft()
                    yield entry["tag"], self.assemble(entry)
            while pending:
                entry = pending.popleft()
                yield entry["tag"], self.assemble(entry)

    def cut(self, rows: SerializedRows) -> list[tuple[int, int]]:
        """Row ranges of at most ``max_rows`` rows and ``max_bytes`` bytes (a larger single row: error)."""
        n = len(rows.ends)
        budget = self.max_bytes - self.serializer.overhead()
        spans, start = [], 0
        while start < n:
            base = int(rows.ends[start - 1]) if start else 0
            stop = int(np.searchsorted(rows.ends, base + budget, side="right"))
            stop = min(stop, start + self.max_rows, n)
            if stop == start:
                raise ValueError(
                    f"a row of {rows.size(start, start + 1)} bytes exceeds maxBatchBytes={self.max_bytes}"
                )
            spans.append((start, stop))
            start = stop
        return spans

    def call(self, rows: SerializedRows, start: int, stop: int) -> list[Segment]:
        status, body, variant = self.post(self.serializer.body(rows, start, stop))
        if status < 300:
            try:
                out = self.deserializer.deserialize(body, stop - start)
                counts = {k: len(v) for k, v in out.items()}
                if any(c != stop - start for c in counts.values()):
                    raise ValueError(f"the endpoint returned {counts} predictions for {stop - start} rows")
                return [Segment(start, stop, out, variant)]
            except ValueError as exc:
                message = f"cannot read the response of variant {variant}: {exc}"
                if not self.error_column:
                    raise EndpointCallError(message) from None
                return [Segment(start, stop, None, variant, message)]
        message = f"{status}: {body.decode('utf-8', 'replace')[:1000]}"
        if not self.error_column:
            raise EndpointCallError(
                f"endpoint {self.target.url} answered {message} for a batch of {stop - start} rows"
            )
        if status in ROW_FAULT_STATUSES and stop - start > 1:  # isolate the rows at fault
            middle = (start + stop) // 2
            return self.call(rows, start, middle) + self.call(rows, middle, stop)
        return [Segment(start, stop, None, variant, message)]

    def post(self, body: bytes) -> tuple[int, bytes, str | None]:
        attempt = 0
        while True:
            try:
                resp = session().post(
                    self.target.url + "/invocations", data=body, headers=self.headers, timeout=self.timeout
                )
                status, content = resp.status_code, resp.content
                variant = resp.headers.get("X-Invoked-Production-Variant")
                retry_after = resp.headers.get("Retry-After")
            except (requests.ConnectionError, requests.Timeout) as exc:
                status, content = CONNECTION_FAILED, f"{type(exc).__name__}: {exc}".encode()
                variant, retry_after = None, None
            if status not in RETRYABLE and status != CONNECTION_FAILED or attempt >= self.max_retries:
                return (503 if status == CONNECTION_FAILED else status), content, variant
            delay = min(self.backoff * 2**attempt, 10.0) * (0.5 + random.random())
            if retry_after and retry_after.isdigit():
                delay = max(delay, float(retry_after))
            time.sleep(delay)
            attempt += 1

    def assemble(self, entry) -> tuple[list, list[str]]:
        """The output columns (and their names) of one item, from its requests' results."""
        n = entry["rows"]
        segments = [s for f in entry["futures"] for s in f.result()]
        columns, names = [], []
        for spec in self.outputs:
            values, valid = None, np.zeros(n, bool)
            for s in segments:
                if s.outputs is None or spec.name not in s.outputs:
                    continue
                part = np.asarray(s.outputs[spec.name], np.float64)
                if spec.kind == "vector" and part.ndim == 1:
                    part = part.reshape(-1, 1)
                if values is None:
                    values = np.zeros((n,) + part.shape[1:], np.float64)
                values[s.start : s.stop] = part
                valid[s.start : s.stop] = True
            if spec.kind == "vector":
                width = values.shape[1] if values is not None else 0
                columns.append(dense_to_arrow(values if values is not None else np.zeros((n, width)), valid))
            else:
                columns.append(
                    pa.array(values if values is not None else np.zeros(n), pa.float64(), mask=~valid)
                )
            names.append(spec.name)
        if self.variant_column:
            columns.append(pa.array(_per_row(segments, n, "variant"), pa.string()))
            names.append(self.variant_column)
        if self.error_column:
            columns.append(pa.array(_per_row(segments, n, "error"), pa.string()))
            names.append(self.error_column)
        return columns, names


def _per_row(segments: list[Segment], n: int, attribute: str) -> np.ndarray:
    """A segment attribute (variant, error) spread over the segment's rows; None where no segment covers."""
    values = np.full(n, None, object)
    for s in segments:
        values[s.start : s.stop] = getattr(s, attribute)
    return values

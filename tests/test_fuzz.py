"""Fuzzing what reads bytes from outside: the recordIO framing, the protobuf decoders, the model server's request
decoders and content negotiation.

Properties, for every input hypothesis tries:

* only the documented error escapes: ``RecordIOError`` from the framing, ``ValueError`` (which RecordIOError
  is) from the protobuf decoders, ``RequestError`` with a 4xx status from the request decoders (the server
  answers it as such); anything else would be a 500 or a crash;
* memory stays within a stated multiple of the input's size: the peak of Python and numpy allocations
  (tracemalloc) plus Arrow's (a proxy memory pool) during one call is at most ``RATIO[target] * len(input)``
  plus ``SLACK`` bytes. The ratios are what the decoders are built to: numpy/Arrow paths hold a few copies of
  the data (16x); the JSON and text paths hold a Python object per value or line (64x: a 2-byte ``"1\\n"``
  line becomes a str, a list slot and an index entry);
* where a reference exists, results agree with it (scan_frames with iter_payloads, the vectorized codec with
  the protobuf runtime, encoders with decoders).

``make test`` tries ``SPARK_ML_FUZZ_EXAMPLES`` inputs per property (default 60, the whole file well under 30 s);
``make fuzz`` sets 5,000. The number of inputs tried is printed at the end of the run.
"""

from __future__ import annotations

import io
import os
import tracemalloc
from collections import Counter
from contextlib import contextmanager

import numpy as np
import orjson
import pyarrow as pa
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import ToyLinearModel

from algorithms import recordio, tensor_codec
from algorithms.proto import Record
from algorithms.recordio import RecordIOError, frame, iter_payloads, scan_frames
from algorithms.records import make_record, records_to_batch
from algorithms.serving.app import InferenceApp
from algorithms.serving.content import (
    CSV,
    JSON,
    JSONLINES,
    LIBSVM,
    RECORDIO_PROTOBUF,
    MediaType,
    choose_response_type,
    request_media_type,
)
from algorithms.serving.decoders import decode_request
from algorithms.serving.errors import RequestError

EXAMPLES = int(os.environ.get("SPARK_ML_FUZZ_EXAMPLES", "60"))
# deterministic in `make test` (CI fails or passes for the code, not for the draw); random in `make fuzz`
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("SPARK_ML_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
SLACK = 256 << 10  # fixed costs: decoder tables, a first numpy buffer, Arrow's minimum allocations
RATIO = {"framing": 16, "protobuf": 16, CSV: 64, JSON: 64, JSONLINES: 64, LIBSVM: 64, RECORDIO_PROTOBUF: 16}
TRIED: Counter = Counter()
DECODED: Counter = Counter()  # request bodies that decoded (the rest were refused with a 4xx)
_POOLS: list = []  # Arrow frees a buffer into the pool it came from: every pool lives as long as the process


@pytest.fixture(scope="module", autouse=True)
def _count_and_trace(fuzz_counts):
    # each path once before measuring: first calls load and cache things (pyarrow's CSV reader: ~20 MB, once)
    rows = np.ones((2000, 4), np.float32)
    for ctype, body in ((CSV, b"1,2,3,4\n" * 2000), (JSON, b'{"instances": [[1,2,3,4]]}'), (JSONLINES, b"[1,2,3,4]"),
                        (LIBSVM, b"1 1:1"), (RECORDIO_PROTOBUF, tensor_codec.encode_sparse(sp.csr_matrix(rows)))):
        decode_request(body, MediaType(ctype), 4)
    yield
    fuzz_counts.update(TRIED)  # printed in the run's summary (conftest.py)
    fuzz_counts.update({f"{k} decoded": n for k, n in DECODED.items()})


@contextmanager
def bounded(target: str, size: int):
    """Count one input and check the peak memory of the block against the target's ratio."""
    TRIED[target] += 1
    previous = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(previous)
    _POOLS.append(pool)
    pa.set_memory_pool(pool)
    tracemalloc.start()  # only around the call: tracing hypothesis's own drawing would slow it several times
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1] + pool.max_memory()
        tracemalloc.stop()
        pa.set_memory_pool(previous)
    limit = RATIO[target] * size + SLACK
    assert peak <= limit, f"{target}: {peak} bytes for a {size}-byte input (limit {limit})"


# ----------------------------------------------------------------------------------------------- framing


@st.composite
def framed_streams(draw):
    """Valid recordIO streams (payloads with the magic inside make multi-part records), then mutated."""
    magic = recordio.MAGIC_BYTES
    pieces = st.one_of(st.binary(max_size=24), st.just(magic),
                       st.binary(min_size=1, max_size=3).map(lambda b: b + magic))
    payloads = draw(st.lists(st.lists(pieces, max_size=4).map(b"".join), max_size=6))
    data = bytearray(b"".join(frame(p) for p in payloads))
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:  # a huge or odd declared length in some header-looking place
            data[at : at + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
    return bytes(data), payloads


@FUZZ
@given(st.one_of(framed_streams(), st.binary(max_size=512).map(lambda b: (b, None))))
def test_framing_raises_only_recordio_errors_and_both_readers_agree(case):
    data, written = case
    with bounded("framing", len(data)):
        try:
            reference = list(iter_payloads(io.BytesIO(data), "fuzz"))
        except RecordIOError:
            reference = None
        try:
            frames = scan_frames(data, "fuzz")
            scanned = [frames.payload(i) for i in range(len(frames))]
        except RecordIOError:
            scanned = None
    assert scanned == reference  # same records, or both refuse the stream
    if written is not None and reference is not None and data == b"".join(frame(p) for p in written):
        assert reference == written


@FUZZ
@given(framed_streams(), st.integers(1, 64))
def test_framing_in_pieces_never_loses_or_invents_records(case, cut):
    """scan_frames with final=False over a stream in two pieces, as the reader feeds it, finds what one call does."""
    data, _ = case
    with bounded("framing", len(data)):
        try:
            whole = scan_frames(data, "fuzz")
            want = [whole.payload(i) for i in range(len(whole))]
        except RecordIOError:
            want = None
        try:
            head = scan_frames(data[:cut], "fuzz", final=False)
            got = [head.payload(i) for i in range(len(head))]
            rest = scan_frames(data[head.consumed :], "fuzz", head.consumed, final=True)
            got += [rest.payload(i) for i in range(len(rest))]
        except RecordIOError:
            got = None
    assert got == want


# ---------------------------------------------------------------------------------------------- protobuf


finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@st.composite
def records(draw):
    """Valid Records of every kind the decoders meet: dense/sparse features, labels, other fields."""
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32]))
    n = draw(st.integers(0, 6))
    values = np.array(draw(st.lists(finite, min_size=n, max_size=n)), dtype=np.float64).astype(dtype)
    sparse = draw(st.booleans())
    kw = {}
    if sparse:
        dim = draw(st.integers(n, n + 5))
        kw = {"keys": sorted(draw(st.sets(st.integers(0, max(dim - 1, 0)), min_size=min(n, dim), max_size=min(n, dim))))
              if dim else [], "shape": [dim]}
        values = values[: len(kw["keys"])]
    label = draw(st.one_of(st.none(), finite, st.lists(finite, min_size=1, max_size=3)))
    uid = draw(st.one_of(st.none(), st.text(max_size=5)))
    return make_record(values, label, feature_dtype=dtype, uid=uid, **kw)


@st.composite
def protobuf_bodies(draw, feature_dim: int = 4):
    """Framed Records, from the runtime and the vectorized encoders, then mutated inside the payloads."""
    kind = draw(st.sampled_from(["records", "dense", "sparse"]))
    if kind == "records":
        body = b"".join(frame(r.SerializeToString()) for r in draw(st.lists(records(), max_size=5)))
    else:
        rows, dim = draw(st.integers(0, 5)), _width(draw, feature_dim)
        x = np.array(draw(st.lists(st.lists(finite, min_size=dim, max_size=dim), min_size=rows, max_size=rows)),
                     np.float32).reshape(rows, dim)
        labels = np.arange(rows, dtype=np.float32) if draw(st.booleans()) else None
        body = tensor_codec.encode_dense(x, labels) if kind == "dense" else tensor_codec.encode_sparse(
            sp.csr_matrix(x), labels)
    data = bytearray(body)
    for _ in range(draw(st.integers(0, 3))):
        if len(data) <= 8:
            break
        at = draw(st.integers(8, len(data) - 1))  # past the first header: payload bytes, mostly
        if draw(st.booleans()):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


@FUZZ
@given(st.one_of(protobuf_bodies(), st.binary(max_size=256)), st.one_of(st.none(), st.integers(0, 8)))
def test_protobuf_decoding_raises_only_value_errors(body, feature_dim):
    with bounded("protobuf", len(body)):
        try:
            batch = tensor_codec.decode(body, "fuzz", feature_dim=feature_dim)
        except ValueError:
            return
    assert batch.features.ndim == 2 and (batch.labels is None or len(batch.labels) == batch.num_rows)


@FUZZ
@given(st.lists(records(), min_size=1, max_size=5))
def test_the_vectorized_decoder_agrees_with_the_protobuf_runtime(items):
    body = b"".join(frame(r.SerializeToString()) for r in items)
    with bounded("protobuf", len(body)):
        try:
            got = tensor_codec.decode(body, "fuzz")
        except ValueError as exc:
            got = exc
        parsed = []
        for payload in iter_payloads(io.BytesIO(body)):
            record = Record()
            record.ParseFromString(payload)
            parsed.append(record)
        try:
            want = records_to_batch(parsed, source="fuzz")
        except ValueError as exc:
            want = exc
    if isinstance(want, ValueError) or isinstance(got, ValueError):
        assert type(got) is type(want)
        return
    gx, wx = got.features, want.features
    assert sp.issparse(gx) == sp.issparse(wx) and gx.shape == wx.shape
    np.testing.assert_array_equal(gx.toarray() if sp.issparse(gx) else gx, wx.toarray() if sp.issparse(wx) else wx)
    if want.labels is None:
        assert got.labels is None
    else:
        np.testing.assert_array_equal(got.labels, want.labels)


# ------------------------------------------------------------------------------------------ request bodies

# mostly numbers a client sends, sometimes what a hostile or broken one does
weird = st.sampled_from(["1e999", "-0", "0x1p3", "nan", "inf", "1_000", " 2 ", "", "１", "1e-400", "--1", "+"])
values = st.one_of(st.floats(-1e9, 1e9, width=32).map(repr), st.integers(-1000, 1000).map(str), weird)
json_numbers = st.one_of(st.floats(-1e9, 1e9), st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True),
                         st.integers(-(2**63), 2**63 - 1))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), json_numbers, st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                   st.dictionaries(st.sampled_from(["features", "data", "values",
                                                                                    "keys", "shape", "instances",
                                                                                    "x"]), inner, max_size=4)),
                           max_leaves=12)


def _width(draw, feature_dim: int) -> int:
    return feature_dim if draw(st.integers(0, 3)) else draw(st.integers(0, feature_dim + 3))


@st.composite
def csv_bodies(draw, feature_dim: int, label_size: int):
    width = _width(draw, feature_dim) + label_size
    rows = draw(st.lists(st.lists(values, min_size=width, max_size=width), max_size=6))
    sep = draw(st.sampled_from(["\n", "\r\n", "\r", "\n\n"]))
    body = sep.join(",".join(r) for r in rows).encode()
    if rows and draw(st.booleans()):  # past the small-body path, to pyarrow's reader
        body = (body + b"\n") * (8192 // (len(body) + 1) + 1)
    return body


@st.composite
def libsvm_bodies(draw, feature_dim: int):
    lines = []
    index = (st.integers(1, feature_dim).map(str) | st.integers(-2, feature_dim + 3).map(str)
             | st.text("0123456789:qid-", max_size=4))
    for _ in range(draw(st.integers(0, 6))):
        tokens = draw(st.lists(st.tuples(index, values).map(":".join), max_size=feature_dim + 2))
        comment = draw(st.sampled_from(["", "", " # note", "#"]))
        lines.append(" ".join([draw(values), *tokens]) + comment)
    return "\n".join(lines).encode()


@st.composite
def json_rows(draw, feature_dim: int):
    width = _width(draw, feature_dim)
    dense = st.lists(json_numbers, min_size=width, max_size=width)
    keys = st.lists(st.integers(-1, feature_dim + 1), max_size=feature_dim + 1)
    sparse = st.builds(lambda k, v, shape: {"keys": k, "values": v, **shape}, keys, st.lists(json_numbers, max_size=5),
                       st.sampled_from([{}, {"shape": [feature_dim]}, {"shape": [feature_dim + 1]}, {"shape": 3}]))
    row = draw(st.one_of(dense, st.builds(lambda f: {"features": f}, dense),
                         st.builds(lambda t: {"data": {"features": t}}, sparse | st.builds(lambda v: {"values": v},
                                                                                         dense)), json_values))
    return row


@st.composite
def json_bodies(draw, feature_dim: int, lines: bool):
    rows = draw(st.lists(json_rows(feature_dim), max_size=5))
    if lines:
        return b"\n".join(orjson.dumps(r) for r in rows)
    doc = {"instances": rows} if draw(st.integers(0, 4)) else draw(json_values)
    return orjson.dumps(doc)


def _mutate(draw, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.sampled_from(b",:\n{}[]\"-.e0 \xff\x00"))
    return bytes(data)


@st.composite
def request_bodies(draw):
    """(content type, its parameters, body, the model's feature_dim): bodies near what a client of a model of
    that width sends, mutated, or plain random bytes."""
    feature_dim = draw(st.integers(1, 6))
    ctype = draw(st.sampled_from([CSV, JSON, JSONLINES, LIBSVM, RECORDIO_PROTOBUF]))
    params, label_size = {}, 0
    if ctype == CSV and not draw(st.integers(0, 3)):
        params["label_size"] = draw(st.sampled_from(["0", "1", "2", "-1", "x", ""]))
        label_size = int(params["label_size"]) if params["label_size"] in ("0", "1", "2") else 0
    structured = {CSV: csv_bodies(feature_dim, label_size), JSON: json_bodies(feature_dim, False),
                  JSONLINES: json_bodies(feature_dim, True), LIBSVM: libsvm_bodies(feature_dim),
                  RECORDIO_PROTOBUF: protobuf_bodies(feature_dim)}[ctype]
    body = draw(structured) if draw(st.integers(0, 4)) else draw(st.binary(max_size=300))
    return ctype, params, _mutate(draw, body), feature_dim


@FUZZ
@given(request_bodies())
def test_request_decoders_raise_only_4xx_request_errors(case):
    ctype, params, body, feature_dim = case
    with bounded(ctype, len(body)):
        try:
            batch = decode_request(body, MediaType(ctype, params), feature_dim)
        except RequestError as exc:
            assert 400 <= exc.status < 500 and exc.message
            return
    DECODED[ctype] += 1
    assert batch.num_rows == 0 or batch.feature_dim == feature_dim


WEIGHTS = {d: np.linspace(-1, 1, d).astype(np.float32) for d in range(1, 7)}
APPS = {d: InferenceApp(ToyLinearModel(w, 0.1)) for d, w in WEIGHTS.items()}


@FUZZ
@given(request_bodies(), st.one_of(st.none(), st.text(max_size=40)), st.one_of(st.none(), st.text(max_size=40)))
def test_the_server_answers_hostile_requests_with_4xx(case, content_type, accept):
    """The whole answer (content negotiation, decoding, predict, encoding) as the server runs it."""
    ctype, params, body, feature_dim = case
    header = content_type if content_type is not None else ctype + "".join(f";{k}={v}" for k, v in params.items())
    with bounded(ctype, len(body) + len(header) + len(accept or "")):
        try:
            media = request_media_type(header)
            chosen = choose_response_type(accept)
            answer = APPS[feature_dim].answer(body, media, chosen)
        except RequestError as exc:
            assert 400 <= exc.status < 500, (exc.status, exc.message)
            return
    assert isinstance(answer, bytes) and answer


def test_wide_and_deep_inputs_stay_within_their_bounds():
    """The shapes random inputs rarely reach: many tiny rows, one very wide row, deep JSON nesting."""
    cases = [(CSV, b"1\n" * 50_000), (CSV, b"1," * 50_000 + b"1\n"), (LIBSVM, b"1\n" * 50_000),
             (LIBSVM, b"1 " + b" ".join(b"1:1" for _ in range(20_000))), (JSONLINES, b"[]\n" * 30_000),
             (JSON, b'{"instances": [' + b",".join([b"[1,2,3,4]"] * 20_000) + b"]}"),
             (JSON, b'{"instances": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"),
             (RECORDIO_PROTOBUF, tensor_codec.encode_sparse(sp.csr_matrix((20_000, 4), dtype=np.float32)))]
    for ctype, body in cases:
        with bounded(ctype, len(body)):
            try:
                decode_request(body, MediaType(ctype), 4)
            except RequestError as exc:
                assert exc.status == 400

"""numpy varints against the protobuf runtime's own varint encoder."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.internal import decoder, encoder

from algorithms import varint

EDGES = [
    0,
    1,
    127,
    128,
    255,
    16383,
    16384,
    2**21 - 1,
    2**21,
    2**28 - 1,
    2**28,
    2**32 - 1,
    2**32,
    2**35,
    2**42,
    2**49,
    2**56,
    2**63 - 1,
    2**63,
    2**64 - 1,
]


def pb_varint(value: int) -> bytes:
    out = []
    encoder._VarintEncoder()(out.append, value, True)
    return b"".join(out)


def sample(rng: np.random.Generator, n: int) -> np.ndarray:
    bits = rng.integers(0, 65, n)
    return np.array(
        [int(rng.integers(0, 2**62)) % (1 << int(b)) if b < 63 else 2**63 + int(b) for b in bits],
        dtype=np.uint64,
    )


def test_scalar_functions_match_protobuf():
    for v in EDGES + list(range(300)):
        assert varint.encode_scalar(v) == pb_varint(v)
        assert varint.length_scalar(v) == len(pb_varint(v))


def test_vector_encode_matches_protobuf():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.array(EDGES, np.uint64), sample(rng, 2000)])
    stream, lens = varint.encode_stream(values)
    assert stream.tobytes() == b"".join(pb_varint(int(v)) for v in values)
    np.testing.assert_array_equal(lens, [len(pb_varint(int(v))) for v in values])
    np.testing.assert_array_equal(varint.length(values), lens)
    mat, lens2 = varint.encode(values)
    np.testing.assert_array_equal(lens2, lens)
    assert mat.shape == (len(values), 10)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint32, np.int64, np.uint64])
def test_encode_accepts_integer_dtypes(dtype):
    values = np.array([0, 1, 100, 127], dtype=dtype)
    stream, _ = varint.encode_stream(values)
    assert stream.tobytes() == b"".join(pb_varint(int(v)) for v in values)


def test_negative_int64_encodes_as_ten_bytes_like_protobuf_int32_fields():
    values = np.array([-1, -(2**31), 5], np.int64)
    stream, lens = varint.encode_stream(values)
    want = b"".join(pb_varint(int(v) & (2**64 - 1)) for v in values)
    assert stream.tobytes() == want
    np.testing.assert_array_equal(lens, [10, 10, 1])


def test_empty_inputs():
    stream, lens = varint.encode_stream(np.zeros(0, np.uint64))
    assert len(stream) == 0 and len(lens) == 0
    assert len(varint.decode_stream(np.zeros(0, np.uint8))) == 0
    assert len(varint.length(np.zeros(0, np.int64))) == 0


def test_decode_stream_round_trips():
    rng = np.random.default_rng(1)
    for narrow in (True, False):
        values = sample(rng, 3000)
        if narrow:
            values %= np.uint64(2**28)  # the uint32 accumulator path
        stream, _ = varint.encode_stream(values)
        np.testing.assert_array_equal(varint.decode_stream(stream), values)


@pytest.mark.parametrize("widest", range(1, 11))
def test_decode_stream_matches_protobuf_decoder_for_each_width(widest):
    """Streams whose longest varint has 1..10 bytes (the word path up to 4, the byte loop beyond), with
    the widest one first, so that its bytes start the stream."""
    rng = np.random.default_rng(widest)
    top = 2**64 if widest == 10 else 1 << (7 * widest)
    values = [top - 1] + [int(v) % top for v in sample(rng, 400)]
    raw = b"".join(pb_varint(v) for v in values)
    data = np.frombuffer(raw, np.uint8)
    got = varint.decode_stream(data)
    want, at = [], 0
    while at < len(raw):
        value, at = decoder._DecodeVarint(raw, at)
        want.append(value)
    assert [int(v) for v in got] == want == values
    np.testing.assert_array_equal(varint.decode_stream(data, np.flatnonzero(data < 0x80)), got)


def test_read_at_matches_protobuf_decoder():
    rng = np.random.default_rng(2)
    values = np.concatenate([np.array(EDGES, np.uint64), sample(rng, 500)])
    stream, lens = varint.encode_stream(values)
    buf = np.concatenate([stream, np.zeros(varint.MAX_BYTES, np.uint8)])
    pos = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    got, counts = varint.read_at(buf, pos)
    raw = stream.tobytes()
    for i, p in enumerate(pos):
        value, end = decoder._DecodeVarint(raw, int(p))
        assert (int(got[i]), int(counts[i])) == (value, end - p)


def test_read_at_flags_overlong_varints():
    buf = np.array([0x80] * 11 + [0x01] + [0] * 10, np.uint8)
    _, counts = varint.read_at(buf, np.array([0, 1, 2]))
    assert list(counts) == [0, 0, 10]  # 12, 11 and 10 bytes long


def test_decode_stream_rejects_overlong_varints():
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        varint.decode_stream(np.array([0x80] * 11 + [0x01], np.uint8))

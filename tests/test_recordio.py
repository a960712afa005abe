"""dmlc RecordIO framing: writer escaping, both readers, and errors that name the source and byte offset."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from algorithms import recordio
from algorithms.recordio import MAGIC, MAGIC_BYTES, RecordIOError, frame, iter_payloads, scan_frames

M = MAGIC_BYTES


def dmlc_frame(payload: bytes) -> bytes:
    """dmlc-core RecordIOWriter::WriteRecord, restated from recordio.cc as an independent reference."""
    out = bytearray()
    n = len(payload)
    lower_align = n >> 2 << 2
    dptr = 0
    for i in range(0, lower_align, 4):
        if payload[i : i + 4] == M:
            out += struct.pack("<II", MAGIC, ((1 if dptr == 0 else 2) << 29) | (i - dptr)) + payload[dptr:i]
            dptr = i + 4
    out += struct.pack("<II", MAGIC, ((3 if dptr else 0) << 29) | (n - dptr)) + payload[dptr:]
    out += b"\0" * (((n + 3) >> 2 << 2) - n)
    return bytes(out)


def random_payloads(rng: np.random.Generator, count: int, magic_rate: float = 0.0) -> list[bytes]:
    out = []
    for _ in range(count):
        n = int(rng.integers(0, 64))
        b = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        for i in range(0, n - 3):
            if rng.random() < magic_rate:
                b[i : i + 4] = M
        out.append(bytes(b))
    return out


def payloads_of(frames: recordio.Frames) -> list[bytes]:
    return [frames.payload(i) for i in range(len(frames))]


# ------------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"a",
        b"abcd",
        b"abcde",
        M,
        M + M,
        b"x" + M,
        b"xy" + M + b"z",
        b"abcd" + M,
        M + b"abcd" + M,
        b"1234" + M + M + M + b"5",
        M[:3],
        b"\0" * 9,
    ],
)
def test_frame_matches_dmlc(payload):
    assert frame(payload) == dmlc_frame(payload)


def test_frame_matches_dmlc_on_random_payloads():
    rng = np.random.default_rng(1)
    for p in random_payloads(rng, 500, magic_rate=0.05):
        assert frame(p) == dmlc_frame(p)
        assert frame(bytearray(p)) == frame(memoryview(p)) == dmlc_frame(p)


def test_frame_layout():
    data = frame(b"hello")
    assert data[:4] == bytes.fromhex("0A23D7CE")  # the magic, little-endian on disk
    assert struct.unpack_from("<I", data, 4)[0] == 5
    assert data[8:] == b"hello\0\0\0"
    assert len(data) % 4 == 0


def test_magic_positions_are_aligned_and_inside_whole_words():
    assert recordio.magic_positions(b"ab" + M + b"cd") == []
    assert recordio.magic_positions(b"abcd" + M + M[:2]) == [4]
    assert recordio.magic_positions(M + b"xxxx" + M) == [0, 8]
    assert recordio.magic_positions(b"") == []


def test_frame_rejects_oversized_records():
    class Huge(bytes):
        def __len__(self):
            return recordio.MAX_RECORD_LENGTH + 1

    with pytest.raises(ValueError, match="exceeds the RecordIO limit"):
        frame(Huge())


def test_write_records_returns_bytes_written():
    out = io.BytesIO()
    payloads = [b"a", M, b"abcdefgh"]
    n = recordio.write_records(out, payloads)
    assert n == len(out.getvalue()) == sum(len(dmlc_frame(p)) for p in payloads)


# ------------------------------------------------------------------------------------------------- reading


def test_readers_round_trip_random_streams():
    rng = np.random.default_rng(2)
    for trial in range(40):
        payloads = random_payloads(rng, int(rng.integers(0, 30)), magic_rate=0.1 if trial % 2 else 0.0)
        data = b"".join(dmlc_frame(p) for p in payloads)
        assert list(iter_payloads(io.BytesIO(data))) == payloads
        frames = scan_frames(data)
        assert payloads_of(frames) == payloads
        assert frames.consumed == len(data)
        # numpy input and a uint8 view work alike
        assert payloads_of(scan_frames(np.frombuffer(data, np.uint8))) == payloads


def test_readers_accept_unescaped_magic_as_the_sdk_writes_it():
    payloads = [b"abcd" + M + b"efgh", M, b"x" * 7, M + M]
    data = b"".join(struct.pack("<II", MAGIC, len(p)) + p + b"\0" * (-len(p) & 3) for p in payloads)
    assert list(iter_payloads(io.BytesIO(data))) == payloads
    assert payloads_of(scan_frames(data)) == payloads


def test_scan_frames_is_zero_copy_without_multi_part_records():
    data = np.frombuffer(b"".join(frame(b"r%d" % i) for i in range(10)), np.uint8)
    frames = scan_frames(data)
    assert frames.data is data or np.shares_memory(frames.data, data)
    np.testing.assert_array_equal(frames.starts, np.arange(10) * 12 + 8)
    np.testing.assert_array_equal(frames.lengths, 2)


@pytest.mark.parametrize("cut_every", [1, 3, 4, 5, 7, 16, 33])
def test_scan_frames_not_final_resumes_across_any_cut(cut_every):
    rng = np.random.default_rng(cut_every)
    payloads = random_payloads(rng, 40, magic_rate=0.05)
    data = b"".join(frame(p) for p in payloads)
    got, pending, at = [], b"", 0
    for lo in range(0, len(data), cut_every):
        buf = pending + data[lo : lo + cut_every]
        frames = scan_frames(buf, "s", at, final=False)
        got += payloads_of(frames)
        pending = buf[frames.consumed :]
        at += frames.consumed
    got += payloads_of(scan_frames(pending, "s", at, final=True))
    assert got == payloads


# -------------------------------------------------------------------------------------------------- errors


def both_readers_fail(data: bytes, source: str = "f.rec"):
    """The error each reader raises; both must agree on the problem's byte offset."""
    with pytest.raises(RecordIOError) as scanned:
        scan_frames(data, source)
    with pytest.raises(RecordIOError) as streamed:
        list(iter_payloads(io.BytesIO(data), source))
    assert scanned.value.source == streamed.value.source == source
    assert scanned.value.offset == streamed.value.offset
    assert source in str(scanned.value) and f"byte offset {scanned.value.offset}" in str(scanned.value)
    return scanned.value


def good_stream() -> tuple[bytes, list[int]]:
    payloads = [b"first", b"second record", b"", b"x" * 40]
    frames = [frame(p) for p in payloads]
    offsets = list(np.cumsum([0] + [len(f) for f in frames])[:-1])
    return b"".join(frames), offsets


def test_truncated_payload():
    data, offsets = good_stream()
    err = both_readers_fail(data[:-5])
    assert err.offset == offsets[-1] and "truncated record" in err.problem


@pytest.mark.parametrize("keep", [1, 4, 7])
def test_truncated_header(keep):
    data, _ = good_stream()
    err = both_readers_fail(data + frame(b"next")[:keep])
    assert err.offset == len(data) and "truncated record header" in err.problem


def test_bad_magic_names_the_record_offset():
    data, offsets = good_stream()
    broken = bytearray(data)
    broken[offsets[2]] ^= 0xFF
    err = both_readers_fail(bytes(broken))
    assert err.offset == offsets[2] and "bad magic" in err.problem


@pytest.mark.parametrize("tail", [b"\x01\x02\x03", b"garbage!", b"garbage!" * 3, b"\0" * 12])
def test_garbage_tail(tail):
    data, _ = good_stream()
    err = both_readers_fail(data + tail)
    assert err.offset == len(data)


def test_stream_ends_inside_a_multi_part_record():
    data, _ = good_stream()
    multi = frame(b"abcd" + M + b"efgh" + M + b"ij")
    first_two_parts = multi[: 8 + 4 + 8 + 4]
    err = both_readers_fail(data + first_two_parts)
    assert err.offset == len(data) and "inside a multi-part record" in err.problem


@pytest.mark.parametrize(
    "flags,problem",
    [
        ((2,), "without a first part"),
        ((3,), "without a first part"),
        ((1, 0), "complete record inside a multi-part record"),
        ((1, 1), "new multi-part record before the previous one ended"),
        ((5,), "invalid continuation flag 5"),
    ],
)
def test_inconsistent_continuation_flags(flags, problem):
    data, _ = good_stream()
    bad = b"".join(struct.pack("<II", MAGIC, (f << 29) | 4) + b"abcd" for f in flags) + frame(b"z")
    err = both_readers_fail(data + bad)
    assert problem in err.problem
    assert err.offset == len(data) + 12 * (len(flags) - 1)


def test_base_offset_shifts_reported_offsets():
    data, _ = good_stream()
    with pytest.raises(RecordIOError, match="part-3.pbr: bad magic .* at byte offset 1000"):
        scan_frames(b"\0" * 8 + data, "part-3.pbr", base_offset=1000)


@pytest.mark.parametrize("cut", [4, 8, 10, 12])
def test_a_cut_inside_a_later_part_names_the_record_start(cut):
    data, _ = good_stream()
    multi = frame(b"abcd" + M + b"efgh" + M + b"ij")
    second_part = 8 + 4
    err = both_readers_fail(data + multi[: second_part + cut])  # the second part's header or body is cut
    assert err.offset == len(data) and "stream ends inside a multi-part record" in err.problem


def corrupt(rng: np.random.Generator, data: bytearray) -> None:
    """Flip a byte, cut the end, append garbage or insert a stray head (one of them, at random)."""
    op = rng.integers(0, 4)
    if op == 0 and data:
        data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
    elif op == 1 and data:
        del data[int(rng.integers(0, len(data))) :]
    elif op == 2:
        data += rng.integers(0, 256, int(rng.integers(1, 12)), dtype=np.uint8).tobytes()
    else:
        at = int(rng.integers(0, len(data) // 4 + 1)) * 4
        data[at:at] = M + struct.pack("<I", int(rng.integers(0, 2**32)))


def three_readers(rng: np.random.Generator, data: bytes) -> list:
    """What the stream reader, one scan and a scan in random pieces give: payloads, or the error offset."""
    results = []
    for reader in ("stream", "scan", "pieces"):
        try:
            if reader == "stream":
                results.append(list(iter_payloads(io.BytesIO(data))))
            elif reader == "scan":
                results.append(payloads_of(scan_frames(data)))
            else:
                got, pending, at = [], b"", 0
                cut = int(rng.integers(1, 40))
                for lo in range(0, len(data), cut):
                    buf = pending + data[lo : lo + cut]
                    frames = scan_frames(buf, "s", at, final=False)
                    got += payloads_of(frames)
                    pending, at = buf[frames.consumed :], at + frames.consumed
                results.append(got + payloads_of(scan_frames(pending, "s", at)))
        except RecordIOError as exc:
            results.append(("error at", exc.offset))
    return results


def test_readers_agree_on_randomly_corrupted_streams():
    """Flipped bytes, cuts, garbage and stray heads: both readers, whole or in pieces, give the same
    payloads or fail at the same byte offset."""
    rng = np.random.default_rng(8)
    for _ in range(300):
        data = bytearray(b"".join(frame(p) for p in random_payloads(rng, int(rng.integers(0, 8)), 0.1)))
        corrupt(rng, data)
        results = three_readers(rng, bytes(data))
        assert results[0] == results[1] == results[2]


def test_readers_agree_on_streams_of_records_of_one_length():
    """Records of one length (as dense writers make them) take the scan's shortcut; it must give what the
    walk gives, also with unescaped magic words inside payloads, another record at the end, or damage."""
    rng = np.random.default_rng(9)
    outcomes = set()
    for trial in range(400):
        length = int(rng.integers(0, 24))
        payloads = [bytearray(rng.integers(0, 256, length, dtype=np.uint8).tobytes())
                    for _ in range(int(rng.integers(1, 12)))]
        for p in payloads:
            if length >= 4 and rng.random() < 0.3:  # unescaped, as the SageMaker SDK writes it
                at = int(rng.integers(0, length // 4)) * 4
                p[at : at + 4] = M
        data = bytearray(b"".join(struct.pack("<II", MAGIC, length) + p + b"\0" * (-length & 3)
                                  for p in payloads))
        if rng.random() < 0.3:
            data += frame(rng.integers(0, 256, int(rng.integers(0, 30)), dtype=np.uint8).tobytes())
        if trial % 2:
            corrupt(rng, data)
        results = three_readers(rng, bytes(data))
        assert results[0] == results[1] == results[2]
        outcomes.add(isinstance(results[0], tuple))
    assert outcomes == {True, False}  # both clean reads and errors were exercised

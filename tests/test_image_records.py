"""MXNet image RecordIO and .lst files: round trips, streaming over byte ranges, splits, and clear errors.

Byte compatibility with the real MXNet and im2rec is in ``test_image_golden.py``; this file checks our own
behaviour on generated data against independent expectations (the records we wrote, dmlc's split rule).
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from algorithms import image_lists, recordio
from algorithms.image_lists import ImageListError, ListEntry
from algorithms.image_records import (
    IR_HEADER_SIZE,
    ImageRecord,
    ImageRecordError,
    ImageRecordFile,
    ImageRecordWriter,
    iter_image_records,
    iter_ranges,
    pack,
    read_index,
    split_record_files,
    unpack,
    write_image_records,
)


def random_records(rng: np.random.Generator, n: int, with_magic: bool = True) -> list[ImageRecord]:
    out = []
    for i in range(n):
        body = rng.integers(0, 256, size=int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        if with_magic and i % 7 == 3:  # put the magic at an aligned payload offset: a multi-part record
            body = body[:12] + recordio.MAGIC_BYTES + body[12:]
        label = float(i % 5) if i % 3 else rng.normal(size=int(rng.integers(1, 5))).astype(np.float32)
        out.append(ImageRecord(label, body, id=i * 1000 + 7, id2=i % 2))
    return out


def test_header_layout_is_mxnets_irheader():
    """``struct.pack('IfQQ', flag, label, id, id2)`` (24 bytes), then the float32 labels when flag > 0."""
    single = pack(ImageRecord(2.5, b"JPEG", 9, 1))
    assert single == struct.pack("<IfQQ", 0, 2.5, 9, 1) + b"JPEG"
    multi = pack(ImageRecord([1, 0.5], b"PNG", 3))
    assert multi == struct.pack("<IfQQ", 2, 0.0, 3, 0) + np.array([1, 0.5], "<f4").tobytes() + b"PNG"
    assert IR_HEADER_SIZE == 24
    back = unpack(multi)
    assert back.flag == 2 and back.image == b"PNG" and back.label.dtype == np.float32
    assert unpack(single) == ImageRecord(2.5, b"JPEG", 9, 1)


def test_record_values_are_checked():
    with pytest.raises(ValueError, match="empty label array"):
        ImageRecord([], b"x")
    with pytest.raises(ValueError, match="id must be an integer"):
        ImageRecord(1.0, b"x", id=-1)
    with pytest.raises(ValueError, match="id2 must be an integer"):
        ImageRecord(1.0, b"x", id2=2**64)
    with pytest.raises(ValueError, match="label 1e\\+300 does not fit a float32"):
        ImageRecord(1e300, b"x")
    with pytest.raises(ValueError, match="does not fit a float32"):
        ImageRecord([1.0, -1e39], b"x")
    assert ImageRecord(3, b"x").label == 3.0 and ImageRecord(np.float32(2), b"x").flag == 0
    assert ImageRecord(float("inf"), b"x").label == float("inf")
    tenth = ImageRecord(0.1, b"x")  # kept at the float32 precision it is stored with
    assert tenth.label == float(np.float32(0.1)) and unpack(pack(tenth)) == tenth


def test_write_then_stream_and_random_access(tmp_path):
    rng = np.random.default_rng(1)
    records = random_records(rng, 40)
    rec, idx = tmp_path / "data.rec", tmp_path / "data.idx"
    assert write_image_records(str(rec), records, str(idx)) == 40
    assert list(iter_image_records(str(rec))) == records
    keys, offsets = read_index(str(idx))
    assert keys == [r.id for r in records]
    with ImageRecordFile.open(str(rec)) as f:
        assert len(f) == 40 and list(f) == records
        for i in rng.permutation(40):
            assert f.read(records[i].id) == records[i]
        with pytest.raises(KeyError, match="no record with key 12345"):
            f.read(12345)
    # the offsets are where each record starts in the file
    data = rec.read_bytes()
    for off in offsets:
        assert data[off : off + 4] == recordio.MAGIC_BYTES


def test_byte_ranges_partition_the_records_at_any_cut_points(tmp_path):
    """dmlc's rule: a record belongs to the range holding its first head, so ranges cut anywhere (mid-record,
    mid-part, unaligned) partition the file's records."""
    rng = np.random.default_rng(2)
    records = random_records(rng, 60)
    rec = tmp_path / "data.rec"
    write_image_records(str(rec), records)
    size = rec.stat().st_size
    for _ in range(20):
        cuts = sorted({0, size, *rng.integers(0, size, size=int(rng.integers(1, 8))).tolist()})
        got = [r for lo, hi in zip(cuts, cuts[1:], strict=False) for r in iter_image_records(str(rec), lo, hi)]
        assert got == records


def test_split_without_index_cuts_bytes_and_with_index_balances_counts(tmp_path):
    rng = np.random.default_rng(3)
    paths, everything = [], []
    for k, n in enumerate((13, 1, 0, 29)):
        records = random_records(rng, n)
        path = tmp_path / f"part-{k}.rec"
        write_image_records(str(path), records, str(tmp_path / f"part-{k}.idx") if k != 1 else None)
        paths.append(str(path))
        everything += records
    # one file lacks an index: byte ranges
    split = split_record_files(paths, 4)
    assert all(r.records is None for part in split for r in part)
    assert [r for part in split for r in iter_ranges(part)] == everything
    # every file indexed: counts differ by at most one, and are known without reading
    write_image_records(paths[1], everything[13:14], str(tmp_path / "part-1.idx"))
    for parts in (1, 2, 3, 7, 43, 50):
        split = split_record_files(paths, parts)
        got = [list(iter_ranges(part)) for part in split]
        assert [r for part in got for r in part] == everything
        sizes = [len(g) for g in got]
        assert max(sizes) - min(sizes) <= 1
        assert [sum(r.records for r in part) for part in split] == sizes


def test_writer_is_atomic(tmp_path):
    rec, idx = tmp_path / "out.rec", tmp_path / "out.idx"
    with pytest.raises(RuntimeError), ImageRecordWriter(str(rec), str(idx)) as writer:
        writer.write(ImageRecord(1.0, b"abc", 1))
        raise RuntimeError("the job failed half-way")
    assert os.listdir(tmp_path) == []
    with ImageRecordWriter(str(rec), str(idx)) as writer:
        writer.write(ImageRecord(1.0, b"abc", 1))
        assert not rec.exists()  # nothing visible before close
        with pytest.raises(ValueError, match="cannot be written to an .idx line"):
            writer.write(ImageRecord(1.0, b"abc", 2), key="a\tb")
    assert sorted(os.listdir(tmp_path)) == ["out.idx", "out.rec"]
    assert idx.read_text() == "1\t0\n"


def test_errors_name_the_file_and_byte_offset(tmp_path):
    good = pack(ImageRecord(1.0, b"x" * 40, 1))
    path = tmp_path / "bad.rec"
    path.write_bytes(recordio.frame(good) + recordio.frame(b"short"))
    with pytest.raises(ImageRecordError, match=rf"bad.rec \(record at byte offset {len(recordio.frame(good))}\)"
                       r".*5 bytes is shorter than the 24-byte"):
        list(iter_image_records(str(path)))
    bogus = struct.pack("<IfQQ", 1000, 0.0, 1, 0) + b"abc"
    path.write_bytes(recordio.frame(bogus))
    with pytest.raises(ImageRecordError, match=r"byte offset 0\).*declares 1000 float32 labels"):
        list(iter_image_records(str(path)))
    path.write_bytes(recordio.frame(good)[:-6])
    with pytest.raises(recordio.RecordIOError, match=r"bad.rec: truncated record.*at byte offset 0"):
        list(iter_image_records(str(path)))
    path.write_bytes(b"GIF89a not a record file at all")
    with ImageRecordFile(str(path)) as f, pytest.raises(recordio.RecordIOError, match="bad magic.*offset 0"):
        f.read_at(0)


def test_index_errors_name_the_file_and_line(tmp_path):
    rec = tmp_path / "a.rec"
    write_image_records(str(rec), [ImageRecord(1.0, b"abc", 1)])
    idx = tmp_path / "a.idx"
    idx.write_text("1\t0\n\n2\tseven\n")
    with pytest.raises(ImageRecordError, match=r"a.idx line 3: invalid literal"):
        read_index(str(idx))
    idx.write_text("1\t0\n2\t6\n")
    with pytest.raises(ImageRecordError, match=r"a.idx line 2: offset 6 is not a record position"):
        read_index(str(idx))
    idx.write_text("1\t0\n2\t4096\n")
    with pytest.raises(ImageRecordError, match=r"key 2 points at byte offset 4096, past the end of .*a.rec"):
        ImageRecordFile.open(str(rec))
    with ImageRecordFile(str(rec)) as f, pytest.raises(ValueError, match="random access needs one"):
        f.read(1)


def test_list_lines_round_trip_and_stream_across_reads(tmp_path):
    entries = [ListEntry(i, (float(i % 10), 0.5) if i % 2 else (float(i % 10),), f"class{i % 10}/img{i}.jpg")
               for i in range(40_000)]  # over 1 MB: lines cross the reader's chunk boundaries
    path = tmp_path / "train.lst"
    assert image_lists.write_list(str(path), entries) == 40_000
    assert path.stat().st_size > 1 << 20
    assert list(image_lists.iter_list(str(path))) == entries
    assert entries[1].line() == "1\t1.000000\t0.500000\tclass1/img1.jpg\n"


@pytest.mark.parametrize("line, problem", [
    ("5\tcat.jpg", "expected index<TAB>label\\(s\\)<TAB>path, found 2 tab-separated field"),
    ("x\t1\tcat.jpg", "the index 'x' is not an integer"),
    ("-3\t1\tcat.jpg", "the index -3 is negative"),
    ("5\tcat\tcat.jpg", "the label 'cat' is not a number"),
])
def test_bad_list_lines_name_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "train.lst"
    path.write_text(f"0\t1\ta.jpg\n\n{line}\n")
    with pytest.raises(ImageListError, match=rf"train.lst line 3: {problem}"):
        list(image_lists.iter_list(str(path)))


def test_list_images_stream_in_worker_parts_and_name_missing_files(tmp_path):
    (tmp_path / "img").mkdir()
    entries = []
    for i in range(7):
        (tmp_path / "img" / f"{i}.png").write_bytes(b"image-%d" % i)
        entries.append(ListEntry(100 + i, (float(i % 3),) if i != 4 else (1.0, 2.0), f"{i}.png"))
    lst = tmp_path / "train.lst"
    image_lists.write_list(str(lst), entries)
    parts = [list(image_lists.iter_list_images(str(lst), str(tmp_path / "img"), part=p, num_parts=3))
             for p in range(3)]
    assert [len(p) for p in parts] == [3, 2, 2]
    merged = sorted((r for p in parts for r in p), key=lambda r: r.id)
    assert [r.id for r in merged] == [100 + i for i in range(7)]
    assert merged[4].flag == 2 and merged[0].label == 0.0 and merged[3].image == b"image-3"
    first_only = list(image_lists.iter_list_images(str(lst), str(tmp_path / "img"), pack_label=False))
    assert first_only[4].label == 1.0
    (tmp_path / "img" / "5.png").unlink()
    with pytest.raises(ImageListError, match=r"5.png \(.*train.lst, index 105\): cannot read the image"):
        list(image_lists.iter_list_images(str(lst), str(tmp_path / "img")))


def test_list_of_a_flat_folder_labels_everything_zero(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.gif", "d.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.jpg").write_bytes(b"x")
    entries = image_lists.list_image_files(str(tmp_path), recursive=False)
    assert entries == [ListEntry(0, (0.0,), "a.jpg"), ListEntry(1, (0.0,), "b.PNG"), ListEntry(2, (0.0,), "d.jpeg")]

"""Byte-exact compatibility with image RecordIO written and read by the real MXNet 1.9.1 and its im2rec.

The fixtures in ``tests/fixtures/golden/image/`` were made by ``tests/fixtures/make_image_golden.py`` in the
throwaway reference environment (``versions.json`` names the writers): ``mx_images.rec/.idx`` by
``recordio.pack`` / ``pack_img`` + ``MXIndexedRecordIO``, ``tree/*`` by ``tools/im2rec.py``; ``expected.json``
holds what MXNet's ``read_idx`` + ``unpack`` read from each, and ``decoded.npz`` OpenCV's pixels. The script also
read files written by our writer back with MXNet; here our reader must read MXNet's files as MXNet does, and our
writers must reproduce MXNet's and im2rec's files byte for byte (so what MXNet reads from ours is known).
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest

from algorithms import image_lists
from algorithms.image_decode import decode_image, shorter_side_size
from algorithms.image_records import (
    ImageRecord,
    ImageRecordFile,
    ImageRecordWriter,
    iter_image_records,
    iter_ranges,
    pack,
    split_record_files,
)

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "golden" / "image"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
RECORD_FILES = {"mx_images": GOLDEN / "mx_images.rec", "tree/pass": GOLDEN / "tree" / "pass.rec",
                "tree/multi": GOLDEN / "tree" / "multi.rec", "tree/encoded": GOLDEN / "tree" / "encoded.rec"}


def image_bytes(name: str) -> bytes:
    return (GOLDEN / "files" / name).read_bytes()


def assert_reads_as_mxnet(record: ImageRecord, want: dict) -> None:
    assert record.flag == want["flag"]
    if want["flag"]:
        assert record.label.dtype == np.float32
        np.testing.assert_array_equal(record.label, np.array(want["label"], np.float32))
    else:
        assert record.label == want["label"]
    assert (record.id, record.id2) == (want["id"], want["id2"])
    assert len(record.image) == want["image_bytes"]
    assert hashlib.sha256(record.image).hexdigest() == want["image_sha256"]
    if "image" in want:
        assert record.image == image_bytes(want["image"])


@pytest.mark.parametrize("name", sorted(RECORD_FILES))
def test_random_access_reads_what_mxnet_reads(name):
    with ImageRecordFile.open(str(RECORD_FILES[name])) as f:
        assert f.keys == [r["key"] for r in EXPECTED[name]]
        for want in EXPECTED[name]:
            assert f.offset_of(want["key"]) == want["offset"]
            assert_reads_as_mxnet(f.read(want["key"]), want)


@pytest.mark.parametrize("name", sorted(RECORD_FILES))
def test_streaming_reads_what_mxnet_reads(name):
    got = list(iter_image_records(str(RECORD_FILES[name])))
    want = sorted(EXPECTED[name], key=lambda r: r["offset"])
    assert len(got) == len(want)
    for record, w in zip(got, want, strict=True):
        assert_reads_as_mxnet(record, w)
        assert f"byte offset {w['offset']})" in record.source


def test_fixture_covers_multi_part_and_multi_label_records():
    records = EXPECTED["mx_images"]
    assert any(r["split_into_parts"] for r in records)
    assert {r["flag"] for r in records} >= {0, 1, 4}
    assert any(r["id"] >= 2**32 and r["id2"] for r in records)
    assert {r["flag"] for r in EXPECTED["tree/multi"]} == {3}


def test_our_writer_reproduces_mxnet_pack_and_indexed_recordio(tmp_path):
    rec, idx = tmp_path / "ours.rec", tmp_path / "ours.idx"
    with ImageRecordWriter(str(rec), str(idx)) as writer:
        for s in EXPECTED["mx_images_written"]:
            offset = writer.write(ImageRecord(s["label"], image_bytes(s["image"]), s["id"], s["id2"]), key=s["key"])
            assert offset == next(r["offset"] for r in EXPECTED["mx_images"] if r["key"] == s["key"])
    assert rec.read_bytes() == (GOLDEN / "mx_images.rec").read_bytes()
    assert idx.read_bytes() == (GOLDEN / "mx_images.idx").read_bytes()


def test_pack_is_mxnet_pack_per_record():
    """Each payload on its own: what ``mx.recordio.pack`` produced, read back from MXNet's file by offset."""
    with ImageRecordFile.open(str(GOLDEN / "mx_images.rec")) as f:
        for s in EXPECTED["mx_images_written"]:
            ours = ImageRecord(s["label"], image_bytes(s["image"]), s["id"], s["id2"])
            assert f.read(s["key"]) == ours
            assert pack(f.read(s["key"])) == pack(ours)


def test_im2rec_list_and_pass_through_packing_are_reproduced(tmp_path):
    root = GOLDEN / "tree" / "root"
    entries = image_lists.list_image_files(str(root), recursive=True)
    assert entries == list(image_lists.iter_list(str(GOLDEN / "tree" / "tree.lst")))
    image_lists.write_list(str(tmp_path / "tree.lst"), entries)
    assert (tmp_path / "tree.lst").read_bytes() == (GOLDEN / "tree" / "tree.lst").read_bytes()
    for prefix, lst in (("pass", "tree.lst"), ("multi", "multi.lst")):
        rec, idx = tmp_path / f"{prefix}.rec", tmp_path / f"{prefix}.idx"
        n = image_lists.pack_image_list(str(GOLDEN / "tree" / lst), str(root), str(rec), str(idx))
        assert n == len(EXPECTED[f"tree/{prefix}"])
        assert rec.read_bytes() == (GOLDEN / "tree" / f"{prefix}.rec").read_bytes()
        assert idx.read_bytes() == (GOLDEN / "tree" / f"{prefix}.idx").read_bytes()


def test_list_images_match_the_records_im2rec_packed():
    root = GOLDEN / "tree" / "root"
    from_list = list(image_lists.iter_list_images(str(GOLDEN / "tree" / "multi.lst"), str(root)))
    from_rec = list(iter_image_records(str(GOLDEN / "tree" / "multi.rec")))
    assert from_list == from_rec
    assert "multi.lst" in from_list[0].source


def test_split_parts_of_im2rec_files_cover_every_record_once():
    paths = [str(RECORD_FILES[n]) for n in ("tree/pass", "mx_images", "tree/encoded")]
    everything = [r for p in paths for r in iter_image_records(p)]
    for use_index in (True, False):
        for parts in (1, 2, 3, 5):
            split = split_record_files(paths, parts, use_index=use_index)
            got = [list(iter_ranges(part)) for part in split]
            assert [r for part in got for r in part] == everything
            if use_index:
                sizes = [len(p) for p in got]
                assert max(sizes) - min(sizes) <= 1
                assert [sum(r.records for r in part) for part in split] == sizes


@pytest.mark.parametrize("name", ["rgb.png", "gray.png", "rgba.png", "magic.png", "pack_img.png"])
def test_png_decodes_to_opencv_pixels(name):
    pixels = np.load(GOLDEN / "decoded.npz")
    data = image_bytes(name)
    np.testing.assert_array_equal(np.asarray(decode_image(data, 3)), pixels[f"{name}:rgb"])
    # gray from colour: Pillow's and OpenCV's luma round differently by at most one level
    gray = np.asarray(decode_image(data, 1)).astype(int)
    assert np.abs(gray - pixels[f"{name}:gray"]).max() <= 1


@pytest.mark.parametrize("name", ["rgb.jpg", "gray.jpg", "tall.jpg", "pack_img_q95.jpg"])
def test_jpeg_decodes_to_opencv_pixels(name):
    """Pillow and OpenCV both decode with libjpeg-turbo (default IDCT, fancy upsampling); gray is the luma
    plane in both."""
    pixels = np.load(GOLDEN / "decoded.npz")
    data = image_bytes(name)
    np.testing.assert_array_equal(np.asarray(decode_image(data, 3)), pixels[f"{name}:rgb"])
    np.testing.assert_array_equal(np.asarray(decode_image(data, 1)), pixels[f"{name}:gray"])


def test_im2rec_reencoded_records_decode_to_what_mxnet_unpack_img_gives():
    pixels = np.load(GOLDEN / "decoded.npz")
    with ImageRecordFile.open(str(RECORD_FILES["tree/encoded"])) as f:
        for key in f.keys:
            want = pixels[f"encoded:{key}:rgb"]
            assert min(want.shape[:2]) == 8  # im2rec --resize 8: the shorter side
            np.testing.assert_array_equal(np.asarray(decode_image(f.read(key).image, 3)), want)


def test_shorter_side_resize_sizes_are_im2recs():
    """im2rec --resize 8 re-encoded each image of the list at the size MXNet's arithmetic gives."""
    pixels = np.load(GOLDEN / "decoded.npz")
    root = GOLDEN / "tree" / "root"
    for entry in image_lists.iter_list(str(GOLDEN / "tree" / "tree.lst")):
        original = decode_image((root / entry.path).read_bytes(), 3)
        height, width = pixels[f"encoded:{entry.index}:rgb"].shape[:2]
        assert shorter_side_size(original.width, original.height, 8) == (width, height)

"""The streaming image batch loader: order, labels, reproducibility across thread counts, bounded memory,
shuffling, and errors that name the record."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from datasets import digits_images, digits_png

from algorithms.image_decode import ImageDecodeError, ImageShape
from algorithms.image_loader import ImageBatchLoader, ImageLabelError
from algorithms.image_records import ImageRecord, iter_image_records, write_image_records
from algorithms.image_transform import ImageTransform

SHAPE = ImageShape(1, 28, 28)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def digits():
    images, labels = digits_png(32)
    records = [ImageRecord(float(y), img, id=i) for i, (img, y) in enumerate(zip(images[:300], labels[:300],
                                                                               strict=True))]
    return records, digits_images(32)[0][:300]


def test_batches_come_in_order_with_labels_ids_and_centre_crops(digits):
    records, pixels = digits
    transform = ImageTransform(SHAPE, mean=(0.0,), std=(1.0,))
    batches = list(ImageBatchLoader(records, transform, batch_size=64, workers=3))
    assert [len(b) for b in batches] == [64, 64, 64, 64, 44]
    data = np.concatenate([b.data for b in batches])
    assert data.shape == (300, 1, 28, 28) and data.dtype == np.float32
    np.testing.assert_array_equal(data[:, 0], pixels[:, 2:30, 2:30].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([b.ids for b in batches]), np.arange(300, dtype=np.uint64))
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), [r.label for r in records])
    assert [len(b) for b in ImageBatchLoader(records, transform, 64, drop_last=True)] == [64] * 4
    raw = np.concatenate([b.data for b in ImageBatchLoader(records, transform, 64, normalize=False)])
    assert raw.dtype == np.uint8 and raw.shape == (300, 1, 28, 28)
    np.testing.assert_array_equal(raw, data)


def test_augmentation_is_reproducible_whatever_the_thread_count(digits):
    records, _ = digits
    transform = ImageTransform(SHAPE, augmentation="crop_color_transform")

    def run(workers: int, epoch: int) -> np.ndarray:
        loader = ImageBatchLoader(records, transform, 32, train=True, workers=workers, seed=11)
        return np.concatenate([b.data for b in loader.epoch(epoch)])

    one = run(1, 0)
    np.testing.assert_array_equal(one, run(4, 0))
    assert not np.array_equal(one, run(1, 1))  # another epoch, other draws
    centre = np.concatenate([b.data for b in ImageBatchLoader(records, transform, 32)])
    assert not np.array_equal(one, centre)


def test_shuffle_buffer_permutes_reproducibly_per_epoch(digits):
    records, _ = digits
    transform = ImageTransform(SHAPE)
    loader = ImageBatchLoader(lambda: iter(records), transform, 50, shuffle_buffer=64, seed=3)

    def ids(epoch: int) -> list[int]:
        return np.concatenate([b.ids for b in loader.epoch(epoch)]).tolist()

    first = ids(0)
    assert sorted(first) == list(range(300)) and first != list(range(300))
    assert ids(0) == first and ids(1) != first


def test_multi_label_batches(digits):
    records, _ = digits
    multi = [ImageRecord([r.label, 1.0, float(r.id % 2)], r.image, r.id) for r in records[:10]]
    batch = next(iter(ImageBatchLoader(multi, ImageTransform(SHAPE), 10)))
    assert batch.labels.shape == (10, 3)
    np.testing.assert_array_equal(batch.labels[:, 2], [i % 2 for i in range(10)])
    first_only = next(iter(ImageBatchLoader(multi, ImageTransform(SHAPE), 10, label_width=1)))
    np.testing.assert_array_equal(first_only.labels, [r.label for r in records[:10]])
    mixed = multi[:5] + records[5:10]
    with pytest.raises(ImageLabelError, match="record id 5.*has 1 label"):
        list(ImageBatchLoader(mixed, ImageTransform(SHAPE), 10))


def test_a_corrupt_image_fails_with_the_file_and_offset(tmp_path, digits):
    records, _ = digits
    bad = records[:20]
    bad[13] = ImageRecord(1.0, b"\xff\xd8\xff garbage", 13)
    path = tmp_path / "train.rec"
    write_image_records(str(path), bad)
    offset = [int(r.source.rsplit(" ", 1)[1].rstrip(")")) for r in iter_image_records(str(path))][13]
    loader = ImageBatchLoader(lambda: iter_image_records(str(path)), ImageTransform(SHAPE), 8)
    with pytest.raises(ImageDecodeError, match=rf"train.rec \(record at byte offset {offset}\): not a decodable"):
        list(loader)


def test_reader_errors_reach_the_consumer(tmp_path, digits):
    records, _ = digits
    path = tmp_path / "cut.rec"
    write_image_records(str(path), records[:10])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="cut.rec: truncated record"):
        list(ImageBatchLoader(lambda: iter_image_records(str(path)), ImageTransform(SHAPE), 4))


def test_memory_is_bounded_and_stopping_early_ends_the_threads(digits):
    records, _ = digits
    pulled = []

    def endless():
        for i in range(10**6):
            pulled.append(i)
            yield records[i % len(records)]

    before = threading.active_count()
    loader = ImageBatchLoader(endless, ImageTransform(SHAPE), batch_size=16, workers=2, prefetch=3)
    it = loader.epoch(0)
    next(it)
    bound = (3 + 2) * 16  # the batch handed out, `prefetch` queued, one the reader holds while it waits
    wait_until(lambda: len(pulled) >= bound)
    assert len(pulled) == bound
    it.close()
    wait_until(lambda: threading.active_count() <= before)

"""A streaming image batch loader: records in, float32 NCHW batches out, decoding in background threads.

Records (from ``.rec`` ranges or ``.lst`` images, shard after shard) are grouped into batches by one reader
thread; each batch is decoded and augmented as one task by a pool of worker threads (Pillow and numpy release
the GIL while they decode, resize and convert), and batches come out in input order. Memory is bounded: at most
``prefetch`` batches are queued or in flight, whatever the channel's size.

Each batch's augmentation is drawn from a generator seeded by ``(seed, epoch, batch number)`` and an optional
shuffle buffer by ``(seed, epoch)``, so a run is reproducible whatever the thread timing. The output is numpy
(``torch.from_numpy`` takes it without a copy); torch is not needed here. A data-parallel worker feeds it its
part of the channel::

    parts = split_record_files(rec_paths, world_size)          # balanced by count when .idx files exist
    loader = ImageBatchLoader(lambda: iter_ranges(parts[rank]), ImageTransform(shape, resize, augmentation),
                              batch_size, train=True, seed=seed)
    for epoch in range(epochs):
        for batch in loader.epoch(epoch):
            x = torch.from_numpy(batch.data).to(device, non_blocking=True)
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .image_records import ImageRecord
from .image_transform import ImageTransform

RecordSource = Callable[[], Iterable[ImageRecord]] | Iterable[ImageRecord]


@dataclass(frozen=True)
class ImageBatch:
    """``data``: float32 (n, channels, height, width), normalized; or, from a loader with ``normalize=False``,
    the uint8 pixels in the same (n, c, h, w) order as a view of an (n, h, w, c) buffer (torch's
    ``channels_last`` layout), for a consumer that normalizes on its device. ``labels``: float32 (n,) or
    (n, label_width); ``ids``: uint64 (n,), the records' ids."""

    data: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class ImageLabelError(ValueError):
    """A record whose labels do not fit the loader's label width. Names the record."""


class _Stop:
    """The reader's last word: the end of the records, or the exception that ended them."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


class ImageBatchLoader:
    """Batches of decoded, transformed images from a stream of records.

    ``source`` is a callable returning the records of one epoch (called once per epoch), or a re-iterable
    collection. ``train=True`` applies the transform's augmentation; otherwise images are centre-cropped.
    ``label_width``: 1 gives (n,) labels (a multi-label record contributes its first label, as MXNet's
    ``label_width=1`` does); k > 1 gives (n, k) and every record must carry exactly k labels; None takes the
    first record's width. ``normalize=False`` hands out uint8 pixels (see :class:`ImageBatch`): a quarter of the
    bytes to move to a GPU, and no float pass over every pixel on the CPU.
    """

    def __init__(self, source: RecordSource, transform: ImageTransform, batch_size: int, *, train: bool = False,
                 workers: int = 2, prefetch: int | None = None, seed: int = 0, shuffle_buffer: int = 0,
                 drop_last: bool = False, label_width: int | None = None, normalize: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if label_width is not None and label_width < 1:
            raise ValueError(f"label_width must be at least 1, got {label_width}")
        self.source = source
        self.transform = transform
        self.batch_size = batch_size
        self.train = train
        self.workers = workers
        self.prefetch = max(1, prefetch if prefetch is not None else 2 * workers)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.drop_last = drop_last
        self.label_width = label_width
        self.normalize = normalize
        self._local = threading.local()

    def __iter__(self) -> Iterator[ImageBatch]:
        return self.epoch(0)

    def epoch(self, epoch: int = 0) -> Iterator[ImageBatch]:
        """The batches of one epoch. Closing the iterator early (``break``) stops the threads."""
        records = self.source() if callable(self.source) else self.source
        pending: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="image-decode")
        widths: list[int] = [] if self.label_width is None else [self.label_width]

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    pending.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                stream = iter(records)
                if self.shuffle_buffer > 1:
                    stream = _shuffled(stream, self.shuffle_buffer, np.random.default_rng([self.seed, epoch, 1]))
                for number in itertools.count():
                    chunk = list(itertools.islice(stream, self.batch_size))
                    if not chunk or (self.drop_last and len(chunk) < self.batch_size):
                        break
                    if not widths:
                        widths.append(chunk[0].flag or 1)
                    future = pool.submit(self._make_batch, chunk, widths[0], epoch, number)
                    if not put(future):
                        future.cancel()
                        return
                put(_Stop())
            except BaseException as exc:  # handed to the consumer, which raises it
                put(_Stop(exc))

        reader = threading.Thread(target=read, name="image-records", daemon=True)
        reader.start()
        try:
            while True:
                item = pending.get()
                if isinstance(item, _Stop):
                    if item.error is not None:
                        raise item.error
                    return
                yield item.result()
        finally:
            stop.set()
            while True:  # unblock the reader and drop what is queued
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, Future):
                    item.cancel()
            reader.join()
            pool.shutdown(wait=True, cancel_futures=True)

    def _make_batch(self, records: list[ImageRecord], width: int, epoch: int, number: int) -> ImageBatch:
        rng = np.random.default_rng([self.seed, epoch, 0, number]) if self.train else None
        images = [r.image for r in records]
        sources = [r.source or f"record id {r.id}" for r in records]
        if self.normalize:  # the uint8 pixels stay inside: each decode thread reuses one buffer for them
            pixels = self.transform.batch(images, sources, rng, self._staging(len(records)))
            data = self.transform.to_input(pixels)
        else:
            data = self.transform.batch(images, sources, rng).transpose(0, 3, 1, 2)
        return ImageBatch(data, _labels(records, width),
                          np.fromiter((r.id for r in records), np.uint64, len(records)))


    def _staging(self, n: int) -> np.ndarray:
        """This thread's reusable uint8 (n, h, w, c) buffer: fresh pages cost a fault and zeroing each."""
        s = self.transform.shape
        buf = getattr(self._local, "pixels", None)
        if buf is None or len(buf) < n or buf.shape[1:] != (s.height, s.width, s.channels):
            buf = self._local.pixels = np.empty((max(n, self.batch_size), s.height, s.width, s.channels), np.uint8)
        return buf[:n]


def _labels(records: list[ImageRecord], width: int) -> np.ndarray:
    if width == 1:
        return np.fromiter((r.label if r.flag == 0 else r.label[0] for r in records), np.float32, len(records))
    out = np.empty((len(records), width), np.float32)
    for i, r in enumerate(records):
        if r.flag != width:
            raise ImageLabelError(f"{r.source or f'record id {r.id}'}: has {r.flag or 1} label(s), the loader "
                                  f"takes {width} per image")
        out[i] = r.label
    return out


def _shuffled(stream: Iterator[ImageRecord], size: int, rng: np.random.Generator) -> Iterator[ImageRecord]:
    """A bounded shuffle: fill a buffer, then emit a random element for each new one (as tf.data does)."""
    buffer: list[ImageRecord] = []
    for record in stream:
        if len(buffer) < size:
            buffer.append(record)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = record
    rng.shuffle(buffer)
    yield from buffer

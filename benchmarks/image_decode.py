"""The image data loader's decode throughput per core vs a bare Pillow decode loop (issue 15's target: >= 0.8x).

Bare loop: ``np.asarray(Image.open(BytesIO(b)).convert(mode))`` for each encoded image, one thread: the least
any loader must do. Ours: ``ImageBatchLoader`` -> float32 NCHW normalized batches of 256 (decode, centre crop,
batch assembly, normalization), fed from memory and from a ``.rec`` file through ``iter_image_records``, with 1
and 2 decode threads; once handing out uint8 pixels (``normalize=False``: the float pass left to the device);
and once with ``crop_color_transform`` augmentation, for scale. "Per core" divides images
by the CPU seconds the whole process used (all threads), so it stays meaningful on a shared machine; wall-clock
rates are printed too. Best of ``--repeats``.

Data: Fashion-MNIST's 10,000 test images (28x28 gray) encoded as PNG, imageShape 1,28,28 (``small``); and
``--large N`` of them upscaled to 256x256 RGB JPEG (quality 90), imageShape 3,224,224 (``large``).

    .venv/bin/python benchmarks/image_decode.py [--repeats 3] [--large 1000] [--cases small large]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file: the repository root and tests/ (the data set helper)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[0] = root
    sys.path.insert(1, os.path.join(root, "tests"))

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from algorithms.image_decode import ImageShape  # noqa: E402
from algorithms.image_loader import ImageBatchLoader  # noqa: E402
from algorithms.image_records import ImageRecord, iter_image_records, write_image_records  # noqa: E402
from algorithms.image_transform import ImageTransform  # noqa: E402


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bare_loop(payloads: list[bytes], mode: str) -> None:
    for b in payloads:
        np.asarray(Image.open(io.BytesIO(b)).convert(mode))


def drain(loader: ImageBatchLoader) -> int:
    return sum(len(b) for b in loader)


def encode(images: np.ndarray, fmt: str, size: int | None = None) -> list[bytes]:
    out = []
    for im in images:
        img = Image.fromarray(im)
        if size is not None:
            img = img.resize((size, size), Image.BILINEAR).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


def run_case(name: str, payloads: list[bytes], labels: np.ndarray, shape: ImageShape, repeats: int) -> None:
    n = len(payloads)
    records = [ImageRecord(float(y), p, id=i) for i, (p, y) in enumerate(zip(payloads, labels, strict=True))]
    with tempfile.TemporaryDirectory() as tmp:
        rec = os.path.join(tmp, "data.rec")
        write_image_records(rec, records)
        plain = ImageTransform(shape)
        augmented = ImageTransform(shape, augmentation="crop_color_transform")
        runs = {
            "bare Pillow loop (1 thread)": lambda: bare_loop(payloads, shape.mode),
            "ours, memory, 1 decode thread": lambda: drain(ImageBatchLoader(records, plain, 256, workers=1)),
            "ours, memory, 2 decode threads": lambda: drain(ImageBatchLoader(records, plain, 256, workers=2)),
            "ours, .rec file, 1 decode thread": lambda: drain(
                ImageBatchLoader(lambda: iter_image_records(rec), plain, 256, workers=1)),
            "ours, .rec file, 2 decode threads": lambda: drain(
                ImageBatchLoader(lambda: iter_image_records(rec), plain, 256, workers=2)),
            "ours, .rec file, 1 thread, uint8 out": lambda: drain(
                ImageBatchLoader(lambda: iter_image_records(rec), plain, 256, workers=1, normalize=False)),
            "ours, .rec, crop_color_transform, 2 threads": lambda: drain(
                ImageBatchLoader(lambda: iter_image_records(rec), augmented, 256, train=True, workers=2)),
        }
        best: dict[str, tuple[float, float]] = {}
        for _ in range(repeats):
            for label, fn in runs.items():
                wall, cpu = timed(fn)
                old = best.get(label)
                best[label] = (min(wall, old[0]) if old else wall, min(cpu, old[1]) if old else cpu)
    size = sum(len(p) for p in payloads) / n
    print(f"\n{name}: {n} images, {size:.0f} bytes each on average, imageShape {shape}, batches of 256")
    bare_per_cpu = n / best["bare Pillow loop (1 thread)"][1]
    print(f"{'':44} {'images/s wall':>14} {'images/CPU-s':>13} {'per core vs bare':>17}")
    for label, (wall, cpu) in best.items():
        per_cpu = n / cpu
        print(f"{label:44} {n / wall:14,.0f} {per_cpu:13,.0f} {per_cpu / bare_per_cpu:16.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=1000, help="images in the large (JPEG 256x256) case")
    parser.add_argument("--cases", nargs="+", default=["small", "large"], choices=["small", "large"])
    args = parser.parse_args()
    from datasets import fashion_mnist

    _, _, x_test, y_test = fashion_mnist()
    print(f"cpus: {os.cpu_count()}, load average (1 min): {os.getloadavg()[0]:.2f}")
    if "small" in args.cases:
        run_case("small: Fashion-MNIST test set as PNG", encode(x_test, "PNG"), y_test, ImageShape(1, 28, 28),
                 args.repeats)
    if "large" in args.cases:
        k = args.large
        run_case("large: Fashion-MNIST upscaled, RGB JPEG", encode(x_test[:k], "JPEG", 256), y_test[:k],
                 ImageShape(3, 224, 224), args.repeats)


if __name__ == "__main__":
    main()

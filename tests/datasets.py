"""Real image data sets, offline, for tests and benchmarks (benchmarks put ``tests/`` on ``sys.path``).

- Fashion-MNIST (Zalando, MIT; 60,000 training and 10,000 test 28x28 gray images in 10 classes) from Debian's
  package ``dataset-fashion-mnist``: fetched with ``apt-get download`` (no root needed) and unpacked with
  ``dpkg -x``, checked against pinned SHA-256 sums of its four idx files, cached under
  ``$SPARK_ML_DATASETS`` (default ``~/.cache/spark_ml/datasets``). :class:`DatasetUnavailable` means Debian's
  registry could not be reached (callers skip, saying so); anything else that goes wrong is an error.
- scikit-learn's bundled digits (1,797 8x8 images, 10 classes) upscaled to 32x32 and encoded as PNG bytes: small
  and instant, for unit tests of the image pipeline.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_DIR = "usr/share/datasets/fashion-mnist"
# SHA-256 of the uncompressed idx files (Debian recompresses the upstream .gz files, so their sums differ from
# upstream's published MD5s; the contents are upstream's). Pinned from dataset-fashion-mnist
# 0.0~git20200523.55506a9-1.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
_UNREACHABLE = ("could not resolve", "temporary failure resolving", "failed to fetch", "unable to connect",
                "could not connect", "connection timed out", "network is unreachable", "connection refused",
                "no route to host")


class DatasetUnavailable(RuntimeError):
    """The package registry could not be reached: the data set cannot be fetched on this machine now."""


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SPARK_ML_DATASETS", "~/.cache/spark_ml/datasets")).expanduser()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file (LeCun's MNIST format: big-endian dims, then unsigned bytes) as a uint8 array."""
    data = pathlib.Path(path).read_bytes()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: holds {body.size} values, its header says {dims}")
    return body.reshape(dims)


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(folder: pathlib.Path) -> bool:
    return all((folder / name).is_file() and _sha256(folder / name) == digest
               for name, digest in FASHION_MNIST_SHA256.items())


def _run(cmd: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise DatasetUnavailable(f"{cmd[0]} is not installed: Debian's package registry cannot be used "
                                 "on this machine") from None
    except subprocess.TimeoutExpired:
        raise DatasetUnavailable(f"{' '.join(cmd)} did not finish in 300 s: the registry is not reachable") from None


def _download(work: pathlib.Path) -> pathlib.Path:
    result = _run(["apt-get", "download", FASHION_MNIST_PACKAGE], work)
    if result.returncode != 0 and "unable to locate package" in result.stderr.lower() and os.geteuid() == 0:
        _run(["apt-get", "update"], work)  # a machine whose package lists were never fetched
        result = _run(["apt-get", "download", FASHION_MNIST_PACKAGE], work)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        if any(s in message.lower() for s in _UNREACHABLE):
            raise DatasetUnavailable(f"apt-get download {FASHION_MNIST_PACKAGE}: the registry is not reachable: "
                                     f"{message[-300:]}")
        raise RuntimeError(f"apt-get download {FASHION_MNIST_PACKAGE} failed: {message[-500:]} (if the package "
                           "is unknown, the package lists need an 'apt-get update' by root)")
    debs = sorted(work.glob(f"{FASHION_MNIST_PACKAGE}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {FASHION_MNIST_PACKAGE} reported success but wrote no .deb")
    return debs[-1]


def fashion_mnist_dir() -> pathlib.Path:
    """The folder of the four verified idx files, fetching and caching them on first use."""
    target = cache_dir() / "fashion-mnist"
    if _verified(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fashion-mnist-") as tmp:
        work = pathlib.Path(tmp)
        deb = _download(work)
        subprocess.run(["dpkg", "-x", str(deb), str(work / "x")], check=True, capture_output=True)
        staged = work / "fashion-mnist"
        staged.mkdir()
        for name in FASHION_MNIST_SHA256:
            packed = work / "x" / FASHION_MNIST_DIR / f"{name}.gz"
            with gzip.open(packed, "rb") as src, open(staged / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        if not _verified(staged):
            bad = [n for n, d in FASHION_MNIST_SHA256.items() if _sha256(staged / n) != d]
            raise RuntimeError(f"{deb.name}: SHA-256 of {', '.join(bad)} differs from the pinned sums")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)  # atomic: a half-written cache is never seen
    return target


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images (60000, 28, 28) uint8, train labels (60000,) uint8, test images, test labels)."""
    folder = fashion_mnist_dir()
    return tuple(read_idx(folder / name) for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


@functools.lru_cache(maxsize=4)
def digits_images(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (n, size, size) uint8 gray images (0-16 scaled to 0-255, bilinear upscale).
    Cached: treat the arrays as read-only."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.clip(np.rint(digits.images * (255 / 16)), 0, 255).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in small])
    labels = digits.target.astype(np.int64)
    big.flags.writeable = labels.flags.writeable = False
    return big, labels


def encode_png(images: np.ndarray, channels: int = 1) -> list[bytes]:
    """Each (h, w) uint8 image as PNG bytes, gray or with the gray copied into RGB."""
    from PIL import Image

    out = []
    for im in images:
        arr = im if channels == 1 else np.repeat(im[:, :, None], 3, axis=2)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def digits_png(size: int = 32, channels: int = 1) -> tuple[list[bytes], np.ndarray]:
    """Digits upscaled to ``size`` x ``size`` as PNG bytes, and their labels."""
    images, labels = digits_images(size)
    return encode_png(images, channels), labels

"""The offline data sets of the image tests and benchmarks: Fashion-MNIST from Debian's package, and the
digits as PNG. Fashion-MNIST is checked against facts published with it (sizes, 6,000/1,000 images per class,
the first training labels), beyond the pinned SHA-256 sums the helper verifies."""

from __future__ import annotations

import io

import numpy as np
import pytest
from datasets import DatasetUnavailable, digits_png, fashion_mnist, fashion_mnist_dir, read_idx
from PIL import Image


@pytest.fixture(scope="module")
def fashion():
    try:
        return fashion_mnist()
    except DatasetUnavailable as exc:  # the one condition that skips: Debian's registry cannot be reached
        pytest.skip(f"Fashion-MNIST cannot be fetched here: {exc}")


def test_fashion_mnist_is_the_published_data_set(fashion):
    x_train, y_train, x_test, y_test = fashion
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [6000] * 10 and np.bincount(y_test).tolist() == [1000] * 10
    assert y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # ankle boot, t-shirt, t-shirt, dress, ...
    assert y_test[:5].tolist() == [9, 2, 1, 1, 6]
    assert x_train.min() == 0 and x_train.max() == 255


def test_registry_unreachable_is_reported_as_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_ML_DATASETS", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    with pytest.raises(DatasetUnavailable, match="apt-get is not installed"):
        fashion_mnist_dir()
    assert not (tmp_path / "cache" / "fashion-mnist").exists()


def test_read_idx_checks_its_header(tmp_path):
    path = tmp_path / "x-idx2-ubyte"
    path.write_bytes(b"\0\0\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6)))
    assert read_idx(path).tolist() == [[0, 1, 2], [3, 4, 5]]
    path.write_bytes(b"\0\0\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(5))
    with pytest.raises(ValueError, match="holds 5 values, its header says"):
        read_idx(path)
    path.write_bytes(b"\0\0\x0d\x01" + bytes(8))
    with pytest.raises(ValueError, match="not an idx file of unsigned bytes"):
        read_idx(path)


def test_digits_as_png():
    images, labels = digits_png(32, channels=3)
    assert len(images) == len(labels) == 1797 and set(labels.tolist()) == set(range(10))
    img = Image.open(io.BytesIO(images[0]))
    assert img.format == "PNG" and img.size == (32, 32) and img.mode == "RGB"

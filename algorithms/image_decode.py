"""Decode JPEG/PNG bytes with Pillow into the channel count a network takes, and the resizes SageMaker uses.

Image Classification's ``image_shape`` is ``"channels,height,width"``: training resizes the shorter side to
``resize`` (keeping the aspect ratio, MXNet's integer arithmetic) and crops; inference resizes to the shape
exactly, without keeping the aspect ratio. Only JPEG and PNG are accepted, the formats SageMaker documents;
anything else (a corrupt or truncated file, another format) raises :class:`ImageDecodeError` naming the record.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

FORMATS = ("JPEG", "PNG")
# MXNet's ImageNet pixel statistics (mean_r/g/b, std_r/g/b of its training scripts), in 0-255 units; one
# channel takes their ITU-R 601 luma, the weights that turn RGB into the gray a one-channel model sees.
RGB_MEAN = (123.68, 116.779, 103.939)
RGB_STD = (58.393, 57.12, 57.375)
_LUMA = (0.299, 0.587, 0.114)
GRAY_MEAN = (float(np.dot(_LUMA, RGB_MEAN)),)
GRAY_STD = (float(np.dot(_LUMA, RGB_STD)),)


class ImageDecodeError(ValueError):
    """Bytes that are not a decodable JPEG or PNG image. The message names the record or file."""


@dataclass(frozen=True)
class ImageShape:
    """``image_shape`` = ``"channels,height,width"`` (SageMaker's order); channels is 1 (gray) or 3 (RGB)."""

    channels: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"image shape {self}: channels must be 1 or 3, got {self.channels}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image shape {self}: height and width must be positive")

    @classmethod
    def parse(cls, text: str, name: str = "imageShape") -> ImageShape:
        parts = [p.strip() for p in str(text).split(",")]
        try:
            if len(parts) != 3:
                raise ValueError
            c, h, w = (int(p) for p in parts)
            return cls(c, h, w)
        except ValueError as exc:
            detail = f": {exc}" if str(exc) else ""
            raise ValueError(f"{name} must be 'channels,height,width' with channels 1 or 3 and positive sizes, "
                             f"got {text!r}{detail}") from None

    @property
    def mode(self) -> str:
        """The Pillow mode images are decoded to."""
        return "L" if self.channels == 1 else "RGB"

    def __str__(self) -> str:
        return f"{self.channels},{self.height},{self.width}"


def decode_image(data: bytes, channels: int, source: str = "<image>",
                 min_size: tuple[int, int] | int | None = None) -> Image.Image:
    """Decode JPEG/PNG bytes to mode ``L`` (1 channel) or ``RGB`` (3), fully loaded.

    Gray images become RGB by repeating the channel; colour ones become gray by ITU-R 601 luma; alpha is
    dropped and 16-bit samples keep their high byte, as OpenCV's ``imread`` does. ``min_size`` lets a large
    JPEG decode at a reduced scale (libjpeg's DCT scaling, several times faster) while staying at least that
    big: (width, height), or an int for the shorter side a ``resize`` will give it.
    """
    mode = "L" if channels == 1 else "RGB"
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        if img.format == "JPEG":  # libjpeg converts (gray = the luma plane, as OpenCV reads it) and scales
            if isinstance(min_size, int):
                min_size = shorter_side_size(img.width, img.height, min_size)
            img.draft(mode, min_size or img.size)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{source}: not a decodable JPEG or PNG image ({_sniff(data)}, {len(data)} "
                               f"bytes): {exc}") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8))
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    return img if img.mode == mode else img.convert(mode)


def _sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "starts like a JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "starts like a PNG"
    return "neither JPEG nor PNG signature"


def shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``size`` and the aspect kept, MXNet's integer arithmetic."""
    if height > width:
        return size, size * height // width
    return size * width // height, size


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """SageMaker's training ``resize``: the shorter side becomes ``size`` (bilinear, MXNet's default)."""
    target = shorter_side_size(img.width, img.height, size)
    return img if target == img.size else img.resize(target, Image.BILINEAR)


def resize_exact(img: Image.Image, width: int, height: int) -> Image.Image:
    """Inference resizing: exactly the image shape, aspect not kept (SageMaker's endpoint behaviour)."""
    return img if img.size == (width, height) else img.resize((width, height), Image.BILINEAR)


def as_hwc(img: Image.Image) -> np.ndarray:
    """A (height, width, channels) uint8 array (a view of Pillow's buffer where it can be)."""
    arr = np.asarray(img)
    return arr[:, :, None] if arr.ndim == 2 else arr


def default_mean_std(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (GRAY_MEAN, GRAY_STD) if channels == 1 else (RGB_MEAN, RGB_STD)


def normalize(batch: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
              out: np.ndarray | None = None) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, ``(x - mean) / std`` per channel, in two passes over the batch."""
    n, h, w, c = batch.shape
    if out is None:
        out = np.empty((n, c, h, w), dtype=np.float32)
    np.copyto(out, batch.transpose(0, 3, 1, 2), casting="unsafe")
    m = np.asarray(mean, np.float32).reshape(1, c, 1, 1)
    inv = (1.0 / np.asarray(std, np.float32)).reshape(1, c, 1, 1)
    out -= m
    out *= inv
    return out


def image_to_input(data: bytes, shape: ImageShape, mean: tuple[float, ...] | None = None,
                   std: tuple[float, ...] | None = None, source: str = "<image>") -> np.ndarray:
    """One request body -> a float32 (channels, height, width) network input: decode, resize to the shape
    exactly, normalize. What an Image Classification endpoint does per request."""
    img = decode_image(data, shape.channels, source, (shape.width, shape.height))
    img = resize_exact(img, shape.width, shape.height)
    d_mean, d_std = default_mean_std(shape.channels)
    return normalize(as_hwc(img)[None], mean or d_mean, std or d_std)[0]

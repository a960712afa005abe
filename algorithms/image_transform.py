"""From encoded images to network input: SageMaker Image Classification's resize, crop and augmentations.

SageMaker's ``augmentation_type`` (its documentation; the numbers are MXNet ``ImageRecordIter``'s augmenter,
which the algorithm runs):

- ``crop``: a random crop of ``image_shape`` and a random horizontal flip;
- ``crop_color``: also adds random values in [-36, 36], [-50, 50] and [-50, 50] to hue, saturation and
  lightness (OpenCV's 8-bit HLS units: hue 0-180, the others 0-255; clamped);
- ``crop_color_transform``: also a random affine transform before the crop: rotation up to 10 degrees, shear
  up to 0.1 and aspect change up to 0.25, the corners filled with 255.

The order is MXNet's: resize the shorter side to ``resize`` -> affine -> crop -> colour -> flip -> normalize.
Without augmentation (validation, or training with no ``augmentation_type``) the crop is centred. An image
smaller than ``image_shape`` after the resize is an error, as in MXNet (set ``resize``).

Random numbers are drawn per batch from a generator the caller seeds, vectorized, so a batch's augmentation
depends on its seed alone, not on which thread decodes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .image_decode import ImageShape, as_hwc, decode_image, default_mean_std, normalize, resize_shorter

AUGMENTATION_TYPES = ("crop", "crop_color", "crop_color_transform")


@dataclass(frozen=True)
class Draws:
    """The random parameters of one batch, one entry per image."""

    crop_x: np.ndarray  # uniform [0, 1): where the crop starts within the slack
    crop_y: np.ndarray
    flip: np.ndarray  # bool
    hls: np.ndarray | None  # (n, 3) int: hue, lightness, saturation shifts
    angle: np.ndarray | None  # int degrees
    shear: np.ndarray | None
    ratio: np.ndarray | None  # aspect change factor in [1 - max, 1 + max]


@dataclass(frozen=True)
class ImageTransform:
    """How encoded images become network input. ``mean``/``std`` are per channel in 0-255 units (default:
    MXNet's ImageNet statistics, their luma for one channel)."""

    shape: ImageShape
    resize: int | None = None
    augmentation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    fill_value: int = 255
    max_rotate_angle: int = 10
    max_shear_ratio: float = 0.1
    max_aspect_ratio: float = 0.25
    random_h: int = 36
    random_s: int = 50
    random_l: int = 50

    def __post_init__(self) -> None:
        if self.augmentation is not None and self.augmentation not in AUGMENTATION_TYPES:
            raise ValueError(f"augmentationType must be one of {', '.join(AUGMENTATION_TYPES)}, "
                             f"got {self.augmentation!r}")
        if self.resize is not None and self.resize < 1:
            raise ValueError(f"resize must be a positive integer, got {self.resize}")
        d_mean, d_std = default_mean_std(self.shape.channels)
        mean = tuple(float(v) for v in (self.mean if self.mean is not None else d_mean))
        std = tuple(float(v) for v in (self.std if self.std is not None else d_std))
        for name, values in (("mean", mean), ("std", std)):
            if len(values) != self.shape.channels:
                raise ValueError(f"{name} has {len(values)} values for {self.shape.channels} channel(s)")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def color(self) -> bool:
        return self.augmentation in ("crop_color", "crop_color_transform")

    @property
    def affine(self) -> bool:
        return self.augmentation == "crop_color_transform"

    def draw(self, rng: np.random.Generator, n: int) -> Draws:
        """A batch's random parameters, MXNet's distributions."""
        crop_x, crop_y = rng.random(n), rng.random(n)
        flip = rng.random(n) < 0.5
        hls = angle = shear = ratio = None
        if self.color:
            limits = np.array([self.random_h, self.random_l, self.random_s], np.float64)
            hls = np.trunc(rng.random((n, 3)) * 2 * limits - limits).astype(np.int64)
        if self.affine:
            angle = rng.integers(-self.max_rotate_angle, self.max_rotate_angle, size=n, endpoint=True)
            shear = rng.random(n) * 2 * self.max_shear_ratio - self.max_shear_ratio
            ratio = rng.random(n) * 2 * self.max_aspect_ratio - self.max_aspect_ratio + 1
        return Draws(crop_x, crop_y, flip, hls, angle, shear, ratio)

    def batch(self, images: Sequence[bytes], sources: Sequence[str] | None = None,
              rng: np.random.Generator | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Decode and transform images into a uint8 (n, height, width, channels) array.

        With ``rng`` the configured augmentation is applied (training); without it, a centre crop only.
        """
        n = len(images)
        s = self.shape
        if out is None:
            out = np.empty((n, s.height, s.width, s.channels), dtype=np.uint8)
        draws = self.draw(rng, n) if rng is not None and self.augmentation else None
        for i in range(n):
            out[i] = self.image(images[i], sources[i] if sources is not None else f"image {i}", draws, i)
        return out

    def image(self, data: bytes, source: str = "<image>", draws: Draws | None = None, i: int = 0) -> np.ndarray:
        """One image as a (height, width, channels) uint8 array (possibly a view)."""
        s = self.shape
        img = decode_image(data, s.channels, source, self.resize)
        if self.resize is not None:
            img = resize_shorter(img, self.resize)
        if draws is not None and draws.angle is not None:
            img = affine(img, int(draws.angle[i]), float(draws.shear[i]), float(draws.ratio[i]), self.fill_value)
        arr = as_hwc(img)
        height, width = arr.shape[:2]
        if height < s.height or width < s.width:
            hint = f" after resizing its shorter side to {self.resize}" if self.resize else ""
            raise ValueError(f"{source}: the image is {width}x{height} (width x height){hint}, smaller than "
                             f"image shape {s} ({s.width}x{s.height}): set resize to at least "
                             f"{max(s.height, s.width)}")
        if draws is None:
            y, x = (height - s.height) // 2, (width - s.width) // 2
        else:
            y = min(int(draws.crop_y[i] * (height - s.height + 1)), height - s.height)
            x = min(int(draws.crop_x[i] * (width - s.width + 1)), width - s.width)
        arr = arr[y : y + s.height, x : x + s.width]
        if draws is not None:
            if draws.hls is not None:
                dh, dl, ds = (int(v) for v in draws.hls[i])
                arr = shift_hls(arr, dh, dl, ds)
            if draws.flip[i]:
                arr = arr[:, ::-1]
        return arr

    def to_input(self, batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 NHWC -> normalized float32 NCHW."""
        return normalize(batch, self.mean, self.std, out)


def affine_matrix(width: int, height: int, angle: int, shear: float, ratio: float) -> np.ndarray:
    """MXNet's forward affine matrix (source -> destination pixel), centred on the image: rotation ``angle``
    degrees (counter-clockwise on screen), shear ``(x, y) -> (x + shear*y, y)``, aspect ``ratio``."""
    a, b = math.cos(angle / 180.0 * math.pi), math.sin(angle / 180.0 * math.pi)
    hs = 2.0 / (1.0 + ratio)
    ws = ratio * hs
    m = np.array([[hs * a - shear * b * ws, hs * b + shear * a * ws, 0.0],
                  [-b * ws, a * ws, 0.0]])
    m[0, 2] = (width - (m[0, 0] * width + m[0, 1] * height)) / 2
    m[1, 2] = (height - (m[1, 0] * width + m[1, 1] * height)) / 2
    return m


def affine(img: Image.Image, angle: int, shear: float, ratio: float, fill: int = 255) -> Image.Image:
    """Apply :func:`affine_matrix` with bilinear sampling, same output size, corners filled with ``fill``."""
    m = affine_matrix(img.width, img.height, angle, shear, ratio)
    inv = np.linalg.inv(m[:, :2])
    shift = -inv @ m[:, 2]  # Pillow maps each output pixel back to its source: src = inv @ dst + shift
    coeffs = (inv[0, 0], inv[0, 1], shift[0], inv[1, 0], inv[1, 1], shift[1])
    fillcolor = fill if img.mode == "L" else (fill,) * len(img.getbands())
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=fillcolor)


def rgb_to_hls(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float RGB in [0, 1] (..., 3) -> hue in degrees [0, 360), lightness and saturation in [0, 1]."""
    return _to_hls(*(np.ascontiguousarray(rgb[..., c]) for c in range(3)))


def _to_hls(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On separate contiguous channel planes, branch-free: cases are selected by multiplying with 0/1 masks,
    because ``np.where`` and ``%`` on noisy pixels mispredict a branch per element and run 20-50x slower than
    arithmetic. The hue comes from the largest channel, the first of equal ones, as ``colorsys`` and OpenCV
    choose; a gray pixel gets hue and saturation 0."""
    dtype = r.dtype
    tiny = dtype.type(np.finfo(dtype).tiny)
    vmax = np.maximum(np.maximum(r, g), b)
    vmin = np.minimum(np.minimum(r, g), b)
    diff = vmax - vmin
    total = vmax + vmin
    light = total * dtype.type(0.5)
    upper = (light >= 0.5).astype(dtype)
    sat = diff / np.maximum(total + upper * (2 - 2 * total), tiny)  # diff / (L < .5 ? total : 2 - total)
    is_r = (vmax == r).astype(dtype)
    is_g = (vmax == g).astype(dtype) * (1 - is_r)
    is_b = 1 - is_r - is_g
    sector = is_r * (g - b) + is_g * ((b - r) + 2 * diff) + is_b * ((r - g) + 4 * diff)
    hue = sector / np.maximum(diff, tiny) * dtype.type(60)  # in [-60, 360)
    hue += (hue < 0).astype(dtype) * dtype.type(360)
    return hue, light, sat


def hls_to_rgb(hue: np.ndarray, light: np.ndarray, sat: np.ndarray) -> np.ndarray:
    """The inverse of :func:`rgb_to_hls` (hue in degrees, any value: it wraps) -> float RGB (..., 3)."""
    return np.stack(_from_hls(hue, light, sat), axis=-1)


def _from_hls(hue: np.ndarray, light: np.ndarray, sat: np.ndarray) -> list[np.ndarray]:
    """Each channel is ``L - a * clamp(min(k - 3, 9 - k), -1, 1)`` with ``k = (n + hue / 30) mod 12`` and
    ``a = S * min(L, 1 - L)``, n = 0, 8, 4 for red, green, blue: the closed form of the usual sector table."""
    a = sat * np.minimum(light, 1 - light)
    h12 = hue / 30
    planes = []
    for n in (0, 8, 4):
        k = h12 + n
        k -= 12 * np.floor(k * (1 / 12))  # k mod 12, without the slow float remainder
        planes.append(light - a * np.clip(np.minimum(k - 3, 9 - k), -1, 1))
    return planes


def shift_hls(arr: np.ndarray, dh: int, dl: int, ds: int) -> np.ndarray:
    """Add ``dh`` to hue (0-180 units), ``dl`` and ``ds`` to lightness and saturation (0-255), clamped as MXNet
    does. A one-channel image has no hue or saturation: only ``dl`` applies."""
    if arr.shape[-1] == 1:
        return np.clip(arr.astype(np.int16) + dl, 0, 255).astype(np.uint8)
    scale = np.float32(1 / 255)
    hue, light, sat = _to_hls(*(arr[..., c].astype(np.float32) * scale for c in range(3)))
    hue = np.clip(hue * np.float32(0.5) + np.float32(dh), 0, 180) * np.float32(2)
    light = np.clip(light * np.float32(255) + np.float32(dl), 0, 255) * scale
    sat = np.clip(sat * np.float32(255) + np.float32(ds), 0, 255) * scale
    out = np.empty(arr.shape, np.uint8)
    for c, plane in enumerate(_from_hls(hue, light, sat)):
        plane *= 255
        np.rint(plane, out=plane)
        out[..., c] = np.clip(plane, 0, 255)
    return out

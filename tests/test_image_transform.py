"""Decoding with Pillow, SageMaker's resizes, and the crop / crop_color / crop_color_transform augmentations.

Expectations are independent of the code under test: Python's ``colorsys`` for the HLS conversions, Pillow's
own ``rotate`` for the rotation part of the affine transform, plain numpy slicing for crops and flips, MXNet's
integer arithmetic for the resize sizes (checked against im2rec's output in ``test_image_golden.py``).
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
from datasets import digits_png
from PIL import Image

from algorithms.image_decode import (
    GRAY_MEAN,
    RGB_MEAN,
    RGB_STD,
    ImageDecodeError,
    ImageShape,
    decode_image,
    image_to_input,
    resize_shorter,
    shorter_side_size,
)
from algorithms.image_transform import (
    ImageTransform,
    affine,
    affine_matrix,
    hls_to_rgb,
    rgb_to_hls,
    shift_hls,
)


def encode(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_image_shape_parsing():
    assert ImageShape.parse("3, 224,224") == ImageShape(3, 224, 224)
    assert str(ImageShape.parse("1,28,28")) == "1,28,28"
    for bad in ("224,224", "2,32,32", "3,0,32", "3,a,32"):
        with pytest.raises(ValueError, match="imageShape must be 'channels,height,width'"):
            ImageShape.parse(bad)


def test_decode_to_the_channel_count_of_the_shape():
    rgb = noise((6, 5, 3))
    gray = noise((6, 5), 1)
    assert np.array_equal(np.asarray(decode_image(encode(rgb), 3)), rgb)
    assert np.array_equal(np.asarray(decode_image(encode(gray), 3)), np.repeat(gray[:, :, None], 3, axis=2))
    assert np.array_equal(np.asarray(decode_image(encode(gray), 1)), gray)
    luma = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114])
    assert np.abs(np.asarray(decode_image(encode(rgb), 1)).astype(float) - luma).max() <= 1
    rgba = np.concatenate([rgb, noise((6, 5, 1), 2)], axis=2)
    assert np.array_equal(np.asarray(decode_image(encode(rgba), 3)), rgb)  # alpha dropped, as imread does
    deep = noise((4, 4), 3).astype(np.uint16) * 257 + 3
    assert np.array_equal(np.asarray(decode_image(encode(deep), 1)), (deep >> 8).astype(np.uint8))


def test_corrupt_or_other_images_raise_errors_naming_the_record():
    good = encode(noise((8, 8, 3)), "JPEG")
    cases = {b"": "neither JPEG nor PNG", b"hello world": "neither JPEG nor PNG",
             good[: len(good) // 2]: "starts like a JPEG", encode(noise((8, 8, 3)), "GIF"): "neither JPEG nor PNG",
             encode(noise((8, 8, 3)))[:40]: "starts like a PNG"}
    for data, kind in cases.items():
        with pytest.raises(ImageDecodeError, match=rf"train.rec \(record at byte offset 96\): not a decodable "
                                                   rf"JPEG or PNG image \({kind}"):
            decode_image(data, 3, "train.rec (record at byte offset 96)")


def test_resize_keeps_the_aspect_with_mxnets_arithmetic():
    assert shorter_side_size(12, 20, 8) == (8, 13)  # tall: width 8, height 20*8//12
    assert shorter_side_size(20, 12, 8) == (13, 8)
    assert shorter_side_size(10, 10, 4) == (4, 4)
    img = Image.fromarray(noise((30, 45, 3)))
    assert resize_shorter(img, 20).size == (30, 20)


def test_large_jpeg_decodes_at_reduced_scale_then_resizes_like_a_full_decode():
    y, x = np.mgrid[0:480, 0:640]
    smooth = np.stack([x * 255 // 639, y * 255 // 479, (x + y) * 255 // 1118], axis=-1).astype(np.uint8)
    data = encode(smooth, "JPEG", quality=95)
    reduced = decode_image(data, 3, min_size=60)
    assert min(reduced.size) >= 60 and reduced.size[0] < 640  # decoded smaller than the file
    full = resize_shorter(decode_image(data, 3), 60)
    fast = resize_shorter(reduced, 60)
    assert fast.size == full.size == (80, 60)
    assert np.abs(np.asarray(fast).astype(int) - np.asarray(full).astype(int)).mean() < 2


def test_inference_input_resizes_exactly_and_normalizes():
    flat = np.full((40, 10, 3), (200, 100, 50), np.uint8)
    x = image_to_input(encode(flat), ImageShape(3, 16, 16))
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    want = (np.array([200, 100, 50]) - np.array(RGB_MEAN)) / np.array(RGB_STD)
    np.testing.assert_allclose(x[:, 5, 5], want, rtol=1e-5)
    g = image_to_input(encode(flat), ImageShape(1, 4, 4), mean=(0.0,), std=(255.0,))
    assert g.shape == (1, 4, 4)
    np.testing.assert_allclose(g, (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, atol=1 / 255)
    assert GRAY_MEAN[0] == pytest.approx(0.299 * 123.68 + 0.587 * 116.779 + 0.114 * 103.939)


def test_without_augmentation_the_crop_is_centred():
    arr = noise((10, 13, 3))
    t = ImageTransform(ImageShape(3, 6, 8))
    out = t.batch([encode(arr)])
    assert np.array_equal(out[0], arr[2:8, 2:10])
    # training without an augmentation type is the same (MXNet: rand_crop and rand_mirror off)
    assert np.array_equal(t.batch([encode(arr)], rng=np.random.default_rng(0)), out)


def test_crop_takes_random_windows_and_flips():
    arr = noise((9, 11, 3))
    data = encode(arr)
    t = ImageTransform(ImageShape(3, 6, 6), augmentation="crop")
    seen = set()
    for seed in range(60):
        img = t.batch([data], rng=np.random.default_rng(seed))[0]
        match = [(y, x, f) for y in range(4) for x in range(6) for f in (False, True)
                 if np.array_equal(img, arr[y : y + 6, x : x + 6][:, ::-1] if f else arr[y : y + 6, x : x + 6])]
        assert len(match) == 1
        seen.add(match[0])
    assert {f for _, _, f in seen} == {False, True}
    assert len({(y, x) for y, x, _ in seen}) > 12  # of 24 windows
    again = t.batch([data] * 3, rng=np.random.default_rng(5))
    assert np.array_equal(again, t.batch([data] * 3, rng=np.random.default_rng(5)))


def test_image_smaller_than_the_shape_is_an_error_suggesting_resize():
    t = ImageTransform(ImageShape(1, 28, 28))
    with pytest.raises(ValueError, match=r"img 3: the image is 20x20 .*smaller than image shape 1,28,28 .*"
                                         r"set resize to at least 28"):
        t.batch([encode(noise((20, 20)))], ["img 3"])
    t = ImageTransform(ImageShape(1, 28, 28), resize=28)
    assert t.batch([encode(noise((20, 20)))]).shape == (1, 28, 28, 1)


def test_hls_conversions_agree_with_colorsys():
    rng = np.random.default_rng(7)
    rgb = rng.random((500, 3))
    rgb[:20] = rng.integers(0, 2, size=(20, 3))  # pure colours, black, white: the edge cases
    rgb[20:40, 1] = rgb[20:40, 0]  # ties between channels
    hue, light, sat = rgb_to_hls(rgb)
    want = np.array([colorsys.rgb_to_hls(*p) for p in rgb])
    np.testing.assert_allclose(hue / 360, want[:, 0], atol=1e-9)
    np.testing.assert_allclose(light, want[:, 1], atol=1e-12)
    np.testing.assert_allclose(sat, want[:, 2], atol=1e-9)
    back = hls_to_rgb(hue, light, sat)
    np.testing.assert_allclose(back, np.array([colorsys.hls_to_rgb(*p) for p in want]), atol=1e-9)
    np.testing.assert_allclose(back, rgb, atol=1e-9)


def test_color_shifts_move_hue_lightness_and_saturation():
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert shift_hls(red, 30, 0, 0).tolist() == [[[255, 255, 0]]]  # +30 units = +60 degrees: yellow
    assert shift_hls(red, 0, 0, 0).tolist() == red.tolist()
    gray = np.array([[[100, 100, 100]]], np.uint8)
    assert shift_hls(gray, 36, 50, 0).tolist() == [[[150, 150, 150]]]  # no saturation: hue does nothing
    assert shift_hls(np.array([[[250]]], np.uint8), 0, 50, 0).tolist() == [[[255]]]  # one channel: lightness
    pale = shift_hls(np.array([[[200, 100, 100]]], np.uint8), 0, 0, -255)
    assert len(set(pale.ravel().tolist())) == 1  # saturation to zero: gray
    img = noise((5, 5, 3), 4)
    assert np.abs(shift_hls(img, 0, 0, 0).astype(int) - img).max() <= 1


def test_crop_color_is_crop_plus_a_colour_shift():
    arr = noise((8, 8, 3), 5)
    crop = ImageTransform(ImageShape(3, 8, 8), augmentation="crop")
    color = ImageTransform(ImageShape(3, 8, 8), augmentation="crop_color")
    rng_draws = color.draw(np.random.default_rng(3), 1)
    assert rng_draws.hls is not None and np.all(np.abs(rng_draws.hls[0]) <= [36, 50, 50])
    base = crop.batch([encode(arr)], rng=np.random.default_rng(3))[0]
    shifted = color.batch([encode(arr)], rng=np.random.default_rng(3))[0]
    dh, dl, ds = rng_draws.hls[0]
    # the colour shift happens before the flip; shifting is per pixel, so it commutes with the flip
    assert np.array_equal(shifted, shift_hls(base, int(dh), int(dl), int(ds)))


def test_affine_matrix_is_mxnets():
    m = affine_matrix(20, 10, 0, 0.1, 1.0)
    np.testing.assert_allclose(m[:, :2], [[1, 0.1], [0, 1]])  # shear (x, y) -> (x + 0.1 y, y)
    for angle, shear, ratio in ((7, 0.05, 0.8), (-10, -0.1, 1.25)):
        m = affine_matrix(20, 10, angle, shear, ratio)
        np.testing.assert_allclose(m @ [10, 5, 1], [10, 5], atol=1e-9)  # the centre stays put
        a, b = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        hs = 2 / (1 + ratio)
        np.testing.assert_allclose(m[1, :2], [-b * ratio * hs, a * ratio * hs])


def test_affine_identity_and_rotation_match_pillow():
    arr = noise((16, 16, 3), 6)
    img = Image.fromarray(arr)
    assert np.array_equal(np.asarray(affine(img, 0, 0.0, 1.0)), arr)
    y, x = np.mgrid[0:32, 0:32]
    smooth = Image.fromarray(((x * 7 + y * 3) % 256).astype(np.uint8))
    ours = np.asarray(affine(smooth, 9, 0.0, 1.0, fill=255)).astype(int)
    want = np.asarray(smooth.rotate(9, resample=Image.BILINEAR, fillcolor=255)).astype(int)
    assert np.abs(ours - want)[4:-4, 4:-4].max() <= 1  # interior: same rotation, counter-clockwise
    assert ours[0, 0] == 255 and ours[-1, -1] == 255  # corners come from outside: filled


def test_crop_color_transform_draws_within_sagemakers_limits():
    t = ImageTransform(ImageShape(3, 24, 24), augmentation="crop_color_transform")
    d = t.draw(np.random.default_rng(0), 4000)
    assert d.angle.min() == -10 and d.angle.max() == 10 and d.angle.dtype.kind == "i"
    assert -0.1 <= d.shear.min() < -0.09 and 0.09 < d.shear.max() <= 0.1
    assert 0.75 <= d.ratio.min() < 0.76 and 1.24 < d.ratio.max() <= 1.25
    assert d.hls.min(axis=0).tolist() == [-35, -49, -49] and d.hls.max(axis=0).tolist() == [35, 49, 49]
    images, _ = digits_png(32, channels=3)
    out = t.batch(images[:8], rng=np.random.default_rng(1))
    assert out.shape == (8, 24, 24, 3) and out.dtype == np.uint8
    plain = ImageTransform(ImageShape(3, 24, 24)).batch(images[:8])
    assert not np.array_equal(out, plain)


def test_transform_arguments_are_checked():
    with pytest.raises(ValueError, match="augmentationType must be one of crop, crop_color, crop_color_transform"):
        ImageTransform(ImageShape(3, 8, 8), augmentation="crop_colour")
    with pytest.raises(ValueError, match="mean has 3 values for 1 channel"):
        ImageTransform(ImageShape(1, 8, 8), mean=RGB_MEAN)
    with pytest.raises(ValueError, match="resize must be a positive integer"):
        ImageTransform(ImageShape(1, 8, 8), resize=0)


def test_to_input_is_normalized_nchw():
    t = ImageTransform(ImageShape(3, 2, 3), mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    batch = noise((4, 2, 3, 3), 8)
    x = t.to_input(batch)
    assert x.shape == (4, 3, 2, 3) and x.dtype == np.float32
    want = (batch.transpose(0, 3, 1, 2) - np.array([10, 20, 30])[None, :, None, None]) / \
        np.array([2, 4, 5])[None, :, None, None]
    np.testing.assert_allclose(x, want, rtol=1e-6)

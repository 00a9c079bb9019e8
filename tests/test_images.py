"""s9lib.data.photos: every awkward kind of photo is converted correctly or refused clearly."""

import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from s9lib.data import augment
from s9lib.data.photos import MAX_PIXELS, center_crop_box, load_image, to_cifar
from s9lib.data.inputs import normalization_of, preprocess
from s9lib.models import ResNet18
from s9lib.checkpoints import load_model, save_checkpoint
from s9lib.training.recipes import get_recipe

from helpers import REPO

pytestmark = pytest.mark.unit


def _png_header_only(path, width, height):
    """A PNG whose header claims ``width x height`` but holds no pixel data: what a
    decompression bomb looks like before decoding (and costs nothing to make)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


# --------------------------------------------------------------------------- modes


def test_rgb_jpeg_sample_loads_as_uint8_rgb():
    img = load_image(REPO / "sampleimages" / "chelsea_cat.jpg")
    assert img.dtype == np.uint8 and img.shape == (300, 451, 3)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.shape == (8, 25, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)


def test_grayscale_sample_jpeg():
    img = load_image(REPO / "sampleimages" / "camera_gray.jpg")
    assert img.shape[-1] == 3 and (img[..., 0] == img[..., 2]).all()


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere ...
    rgba[:, :2, 3] = 0  # ... transparent on the left,
    rgba[:, 2:4, 3] = 128  # half transparent in the middle,
    rgba[:, 4:, 3] = 255  # opaque on the right
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(img[0, 0], [255, 255, 255])
    np.testing.assert_allclose(img[0, 2], [255, 127, 127], atol=1)
    np.testing.assert_array_equal(img[0, 5], [255, 0, 0])
    # another background on request
    np.testing.assert_array_equal(load_image(tmp_path / "a.png", background=(0, 0, 0))[0, 0],
                                  [0, 0, 0])


def test_la_and_palette_transparency(tmp_path):
    la = np.zeros((4, 4, 2), np.uint8)
    la[:, :2, 1] = 255  # black, opaque on the left; transparent on the right
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    img = load_image(tmp_path / "la.png")
    np.testing.assert_array_equal(img[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(img[0, 3], [255, 255, 255])

    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    pal.putpixel((3, 3), 1)
    pal.save(tmp_path / "p.png", transparency=0)  # index 0 (blue) is transparent
    img = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(img[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(img[3, 3], [0, 255, 0])


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16bit_grayscale_is_scaled_not_clipped(tmp_path, fmt):
    values = np.array([[0, 257, 32896, 65535]], np.uint16)  # -> 0, 1, 128, 255
    path = tmp_path / f"g16.{fmt}"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    img = load_image(path)
    np.testing.assert_array_equal(img[0, :, 0], [0, 1, 128, 255])


def test_16bit_rgb_png_is_scaled(tmp_path):
    rgb = np.zeros((3, 3, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32896, 5000
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])  # cv2 writes BGR
    img = load_image(tmp_path / "rgb16.png")
    np.testing.assert_allclose(img[0, 0], [255, 128, 19], atol=1)


def test_cmyk_is_converted(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    img = load_image(tmp_path / "c.jpg")
    assert img.shape == (8, 8, 3)
    assert img[4, 4, 0] > 200 and img[4, 4, 1] < 60 and img[4, 4, 2] < 60  # red


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.putpixel((0, 0), (255, 255, 255))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "r.jpg")
    assert img.shape == (40, 20, 3)  # upright: portrait
    assert img[0, -1].min() > 200  # the top-left pixel went to the top-right corner


# --------------------------------------------------------------------------- refusals


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("content", [b"this is a text file\n", b""])
def test_non_image_file_is_value_error_naming_it(tmp_path, content):
    path = tmp_path / "notes.jpg"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"notes\.jpg is not an image"):
        load_image(path)


def test_truncated_image_is_value_error(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"cut\.png .*(damaged|truncated)"):
        load_image(tmp_path / "cut.png")


def test_folder_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)


def test_very_large_image_is_refused_before_decoding(tmp_path):
    path = _png_header_only(tmp_path / "huge.png", 12_000, 5_000)  # 60 Mpx > 50 Mpx
    assert 12_000 * 5_000 > MAX_PIXELS
    with pytest.raises(ValueError, match=r"huge\.png is 12000x5000 .*megapixel limit"):
        load_image(path)


def test_decompression_bomb_is_refused(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 30_000, 30_000)  # beyond PIL's own limit
    with pytest.raises(ValueError, match=r"bomb\.png"):
        load_image(path)


def test_max_pixels_and_jpeg_draft(tmp_path):
    Image.new("RGB", (2400, 1600), (10, 200, 30)).save(tmp_path / "big.jpg")
    with pytest.raises(ValueError, match="megapixel limit"):
        load_image(tmp_path / "big.jpg", max_pixels=1_000_000)
    # decoded at 1/4 scale: 600x400 = 0.24 Mpx, under the limit, shorter side still >= 256
    img = load_image(tmp_path / "big.jpg", max_pixels=1_000_000, min_side=256)
    assert img.shape == (400, 600, 3)
    np.testing.assert_allclose(img[200, 300], [10, 200, 30], atol=3)


# --------------------------------------------------------------------------- to_cifar


def test_to_cifar_centre_crops_instead_of_squashing():
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[...] = (255, 0, 0)  # red sides ...
    wide[:, 40:80] = (0, 255, 0)  # ... around a green centre square
    out = to_cifar(wide)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out[..., 1] > 240).all() and (out[..., 0] < 15).all()  # all centre, no red
    assert center_crop_box(40, 120) == (0, 40, 40)
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    assert (to_cifar(tall)[..., 1] > 240).all()
    assert center_crop_box(120, 40) == (40, 0, 40)


def test_to_cifar_antialiases():
    checker = ((np.indices((320, 320)).sum(0) % 2) * 255).astype(np.uint8)
    out = to_cifar(np.repeat(checker[..., None], 3, -1))
    assert abs(float(out.mean()) - 127.5) < 3 and out.std() < 4  # smooth grey, not aliased


def test_to_cifar_other_size_and_bad_input():
    assert to_cifar(np.zeros((50, 70, 3), np.uint8), size=16).shape == (16, 16, 3)
    with pytest.raises(ValueError, match="uint8 RGB"):
        to_cifar(np.zeros((50, 70, 3), np.float32))


# --------------------------------------------------------------------------- preprocess


def test_preprocess_defaults_to_cifar_statistics_not_imagenet():
    img = np.full((32, 32, 3), 128, np.uint8)
    x = preprocess(img)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    expected = (128 / 255 - np.array(augment.CIFAR10_MEAN)) / np.array(augment.CIFAR10_STD)
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), expected, rtol=1e-5)
    assert normalization_of(ResNet18())[0] != (0.485, 0.456, 0.406)


def test_preprocess_uses_the_models_statistics(tmp_path):
    # A model trained with the course preset's std carries it in its buffers, and its checkpoint
    # too.
    trained = ResNet18(mean=augment.COURSE_MEAN, std=augment.COURSE_STD)
    save_checkpoint(tmp_path / "ck.pt", trained, recipe=get_recipe("course"))
    model = load_model(tmp_path / "ck.pt", device="cpu")
    assert normalization_of(model) == (augment.COURSE_MEAN, augment.COURSE_STD)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    x = preprocess(imgs, model=model)
    ref = augment.standardize(imgs, augment.COURSE_MEAN, augment.COURSE_STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(x, preprocess(imgs))  # the default stats differ


def test_a_model_without_input_statistics_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="no input statistics"):
        preprocess(np.zeros((1, 32, 32, 3), np.uint8), model=torch.nn.Linear(3, 3))


def test_a_wrapped_model_is_looked_through():
    model = ResNet18(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert normalization_of(torch.nn.DataParallel(model)) == ((0.5,) * 3, (0.25,) * 3)


def test_preprocess_rejects_floats():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((2, 32, 32, 3), np.float32))

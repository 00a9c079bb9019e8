"""Photos from outside CIFAR-10, made ready for the 32x32 model.

Why a module of its own: a photo from a phone or the web is not a CIFAR image. It may be
grayscale, 16-bit, CMYK, transparent, rotated by an EXIF tag, or 50 megapixels, and every one
of those cases goes wrong *silently* with a bare ``Image.open(p).convert("RGB")``: 16-bit
grayscale saturates to white, transparent pixels turn black, a portrait photo lies on its side.
Here each case is either converted correctly or refused with a message naming the file, so a
GradCAM figure never explains a picture other than the one the user gave.

The steps, each usable on its own:

``load_image(path)``
    any file PIL can read -> uint8 RGB (H, W, 3), upright.
``to_cifar(image)``
    centre square crop (aspect ratio kept, nothing squashed) -> anti-aliased resize -> 32x32.
then ``s9lib.data.inputs.preprocess(images, model=model)``, as for any uint8 image: a normalised
float (B, 3, H, W) tensor with the statistics *the model was trained with*, never ImageNet's.

Decisions, so they are not rediscovered:

* **Transparency** is composited over **white** (``background=``). That is how browsers and
  image viewers show a transparent PNG, so the picture the model sees is the picture the user
  saw. (Compositing over the CIFAR mean colour would be invisible to the model, but a reader
  comparing the overlay with the photo would see a grey box that was never there.)
* **16-bit** images are scaled to 8 bits by ``round(v / 257)`` (65535 -> 255), never clipped.
  PIL already reduces 16-bit RGB to 8 bits correctly; 16-bit grayscale (``I;16``, ``I``) it
  would clip, so those are scaled here. 32-bit float images must lie in [0, 1].
* **Colour profiles**: a CMYK image, or an RGB image with an embedded ICC profile (Adobe RGB,
  Display P3), is converted to sRGB with that profile when littlecms can; otherwise with PIL's
  plain conversion.
* **Very large images**: a decompression-bomb guard. The pixel count is read from the header
  *before* decoding, and an image of more than ``MAX_PIXELS`` (50 megapixels, enough for a
  48 MP phone photo) is refused with a ``ValueError``. JPEGs are first decoded at a reduced
  scale when ``min_side`` allows (PIL's ``draft``: 1/2, 1/4 or 1/8, almost free), so a large
  JPEG passes as long as its reduced size does.
* **Animations and multi-page files**: the first frame.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


__all__ = [
    "MAX_PIXELS",
    "load_image",
    "center_crop_box",
    "center_crop",
    "to_cifar",
]

#: Images with more pixels than this (after any JPEG draft reduction) are refused.
MAX_PIXELS = 50_000_000

_WHITE = (255, 255, 255)


def load_image(path: str | os.PathLike, *, background: tuple[int, int, int] = _WHITE,
               max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> np.ndarray:
    """Read the image at ``path`` as an upright uint8 RGB array (H, W, 3).

    ``background``: the colour transparent pixels are composited over (default white).
    ``max_pixels``: refuse images larger than this (decompression-bomb guard).
    ``min_side``: allow JPEGs to be decoded at a reduced scale (1/2 .. 1/8) as long as the
    shorter side stays at least ``min_side`` pixels; ``None`` decodes at full size.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for anything that is
    not a usable image; both name the file and say what to do.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No image at {path}: check the path (relative paths are "
                                f"relative to {Path.cwd()}).")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image; pass image files "
                         "(e.g. sampleimages/*.jpg).")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces PIL's DecompressionBombWarning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_size(im, path, max_pixels, min_side)
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb_array(im, path, background)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path} is too large to decode safely ({exc}); downscale it "
                         "first.") from exc
    except UnidentifiedImageError as exc:
        raise ValueError(f"{path} is not an image PIL can read (unknown or damaged format); "
                         "pass a JPEG, PNG, TIFF, WebP, BMP or GIF file.") from exc
    except (OSError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise ValueError(f"{path} could not be decoded ({exc}); the file is damaged or "
                         "truncated: re-save or re-download it.") from exc


def _check_size(im: Image.Image, path: Path, max_pixels: int, min_side: int | None) -> None:
    """Refuse oversized images before any pixel is decoded (``im.size`` is the header's)."""
    if min_side is not None and im.format == "JPEG":
        w, h = im.size
        scale = min(w, h) / max(min_side, 1)
        if scale >= 2:
            # draft picks the largest reduction keeping both sides >= the requested size
            im.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
    w, h = im.size
    if w * h > max_pixels:
        raise ValueError(
            f"{path} is {w}x{h} = {w * h / 1e6:.0f} megapixels, more than the "
            f"{max_pixels / 1e6:.0f}-megapixel limit (a guard against decompression bombs). "
            "Downscale it first, e.g. `python -c \"from PIL import Image; im = Image.open('IN'); "
            "im.thumbnail((2048, 2048)); im.save('OUT.jpg')\"`, or pass max_pixels= if you "
            "trust the file.")
    if w == 0 or h == 0:
        raise ValueError(f"{path} has no pixels ({w}x{h}).")


def _to_rgb_array(im: Image.Image, path: Path, background: tuple[int, int, int]) -> np.ndarray:
    """Any PIL mode -> uint8 RGB (H, W, 3); see the module docstring for the choices."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im).astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{path} is a 32-bit integer image with values outside 0..65535; "
                             "its range is unknown, so convert it to an 8- or 16-bit image.")
        gray = np.round(arr / 257.0).astype(np.uint8)  # 65535 -> 255, 0 -> 0
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{path} is a floating-point image with values outside [0, 1]; "
                             "its range is unknown, so convert it to an 8- or 16-bit image.")
        gray = np.round(arr * 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "P":
        # Palette images may carry transparency in the palette or in info["transparency"].
        im = im.convert("RGBA" if ("transparency" in im.info or im.palette.mode == "RGBA")
                        else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        im = Image.alpha_composite(canvas, rgba).convert("RGB")
    elif im.mode in ("CMYK", "RGB") and im.info.get("icc_profile"):
        im = _icc_to_srgb(im)
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV, RGBX ...
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: cannot convert PIL mode {im.mode!r} to RGB ({exc}); "
                             "re-save the image as an 8-bit RGB JPEG or PNG.") from exc
    return np.array(im, dtype=np.uint8)  # a copy, independent of the PIL image


def _icc_to_srgb(im: Image.Image) -> Image.Image:
    """Convert with the embedded ICC profile; fall back to PIL's plain conversion."""
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        dst = ImageCms.createProfile("sRGB")
        return ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
    except Exception:  # a broken profile or no littlecms: plain conversion is still usable
        return im.convert("RGB")


# --------------------------------------------------------------------------- to 32x32


def center_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the largest centred square inside a ``height x width`` image."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def center_crop(image: np.ndarray) -> np.ndarray:
    """The largest centred square of ``image`` (H, W[, C]), a view, no resizing."""
    top, left, side = center_crop_box(*image.shape[:2])
    return image[top:top + side, left:left + side]


def to_cifar(image: np.ndarray, size: int = 32) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 (size, size, 3): centre square crop, then resize.

    Cropping rather than squashing keeps the aspect ratio, so a cat stays cat-shaped. The
    resize is PIL's Lanczos filter, which widens its kernel with the reduction factor and so
    anti-aliases (a plain nearest or bilinear 10x reduction would alias fine texture into
    noise the model has never seen).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"to_cifar expects a uint8 RGB array (H, W, 3), got {image.dtype} "
                         f"{image.shape}; load files with s9lib.data.photos.load_image.")
    square = Image.fromarray(np.ascontiguousarray(center_crop(image)))
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8).copy()

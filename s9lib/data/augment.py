"""albumentations 2.0.x pipelines as named presets.

Why presets by name: the book compares pipelines side by side, recipes refer to them as plain
data, and a test can check that each one contains what it claims. Every transform and every
``Compose`` is built with ``strict=True``: albumentations 2.x otherwise only *logs* unknown
arguments (a renamed ``max_holes`` silently becomes a no-op), which is exactly how ports of
1.x pipelines go wrong without anyone noticing.

Presets:

``"course"``
    The course assignment's training pipeline ported faithfully, bugs included: the flip
    always fires (p=1), Normalize runs *first* with a mistyped std (0.2023, 0.1994, 0.2010),
    so the cutout is filled with the mean *in normalised space* (a light grey patch instead
    of an average-coloured one) and brightness/contrast act on normalised floats, where
    albumentations clips the result to [0, 1]: whenever it fires (p=0.5) the whole normalised
    image is squeezed into [0, 1], i.e. pixels between the mean and one std above it.
``"course-fixed"``
    The same intent with the bugs fixed: flip p=0.5, 4-pixel reflect pad + random 32x32
    crop, brightness/contrast and a 12x12 cutout (filled with the mean pixel) on uint8
    pixels, and Normalize last with the true CIFAR-10 statistics.
``"standard"``
    The classic CIFAR baseline: pad + crop + flip, Normalize.
``"test"``
    Normalize only (true statistics).
"""

from __future__ import annotations

from typing import Callable

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from .inputs import CIFAR10_MEAN, CIFAR10_STD, COURSE_MEAN, COURSE_STD

# The statistics live in s9lib.data.inputs (one place for normalisation); named here too because
# the presets below normalise with them.
__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "COURSE_MEAN",
    "COURSE_STD",
    "PRESETS",
    "build",
    "channel_stats",
    "reseed",
    "standardize",
    "unstandardize",
]

_MEAN_PIXEL = tuple(int(round(255 * m)) for m in CIFAR10_MEAN)  # (125, 123, 114)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, H, W, 3) images, in [0, 1] units."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return tuple(x.mean(0).round(4).tolist()), tuple(x.std(0).round(4).tolist())


def _course() -> list:
    return [
        A.HorizontalFlip(p=1.0, strict=True),
        A.Normalize(mean=COURSE_MEAN, std=COURSE_STD, max_pixel_value=255.0, strict=True),
        # ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.1, rotate_limit=15), reflect-101:
        A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                 border_mode=cv2.BORDER_REFLECT_101, p=0.5, strict=True),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(12, 12),
                        hole_width_range=(12, 12), fill=COURSE_MEAN, p=0.5, strict=True),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5,
                                   strict=True),
    ]


def _pad_crop_flip() -> list:
    """A 4-pixel reflect-101 pad, a random 32x32 crop, a horizontal flip half the time."""
    return [
        A.PadIfNeeded(min_height=40, min_width=40, border_mode=cv2.BORDER_REFLECT_101,
                      strict=True),
        A.RandomCrop(height=32, width=32, strict=True),
        A.HorizontalFlip(p=0.5, strict=True),
    ]


def _normalize() -> A.Normalize:
    return A.Normalize(mean=CIFAR10_MEAN, std=CIFAR10_STD, max_pixel_value=255.0, strict=True)


def _course_fixed() -> list:
    return _pad_crop_flip() + [
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5,
                                   strict=True),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(12, 12),
                        hole_width_range=(12, 12), fill=_MEAN_PIXEL, p=0.5, strict=True),
        _normalize(),
    ]


def _standard() -> list:
    return _pad_crop_flip() + [_normalize()]


def _test() -> list:
    return [_normalize()]


PRESETS: dict[str, Callable[[], list]] = {
    "course": _course,
    "course-fixed": _course_fixed,
    "standard": _standard,
    "test": _test,
}

#: The statistics each preset normalises with (``unstandardize`` needs them to show images).
PRESET_STATS = {
    "course": (COURSE_MEAN, COURSE_STD),
    "course-fixed": (CIFAR10_MEAN, CIFAR10_STD),
    "standard": (CIFAR10_MEAN, CIFAR10_STD),
    "test": (CIFAR10_MEAN, CIFAR10_STD),
}


def build(name: str, *, to_tensor: bool = True, seed: int | None = None) -> A.Compose:
    """The named preset as an ``A.Compose``, ending in ``ToTensorV2`` unless ``to_tensor=False``.

    ``to_tensor=False`` returns float32 HWC arrays, handy for showing augmented images.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown augmentation preset {name!r}; choose one of {sorted(PRESETS)}.")
    steps = PRESETS[name]()
    if to_tensor:
        steps.append(ToTensorV2())
    compose = A.Compose(steps, strict=True)
    if seed is not None:
        reseed(compose, seed)
    return compose


def reseed(transform: A.BaseCompose | A.BasicTransform, seed: int) -> None:
    """Give every transform in ``transform`` its own reproducible random stream.

    ``Compose.set_random_seed`` in albumentations 2.0 hands *the same* seed to every child,
    so two p=0.5 transforms would always fire together. Here each child gets an independent
    stream spawned from ``seed``.
    """
    children = list(getattr(transform, "transforms", []))
    streams = np.random.SeedSequence(seed).spawn(len(children) + 1)
    own = int(streams[0].generate_state(1)[0])
    transform.seed = own
    transform.random_generator = np.random.default_rng(own)
    transform.py_random = __import__("random").Random(own)
    for child, stream in zip(children, streams[1:]):
        child_seed = int(stream.generate_state(1)[0])
        if hasattr(child, "transforms"):
            reseed(child, child_seed)
        else:
            child.set_random_seed(child_seed)


def standardize(images: np.ndarray, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 normalised (..., H, W, 3)."""
    return ((images.astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std)).astype(
        np.float32)


def unstandardize(x, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> np.ndarray:
    """Normalised float (B, 3, H, W) tensor or (..., H, W, 3) array -> float [0, 1] HWC for display."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim >= 3 and arr.shape[-3] == 3 and arr.shape[-1] != 3:
        arr = np.moveaxis(arr, -3, -1)
    return np.clip(arr * np.float32(std) + np.float32(mean), 0.0, 1.0)

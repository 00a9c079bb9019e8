"""uint8 pixels -> the tensor the model reads: the one place normalisation is written.

Why one place: a model only works on inputs normalised exactly as in training (the course
recipe divides by a different std than the fast one), and every path into the model (training
batches, evaluation, CAMs, faithfulness masks, photos from disk) must agree on it. Each of
them calls :func:`standardize` (or :func:`preprocess`, which starts from uint8 images), and a
model carries its statistics as buffers (``s9lib.models.ResNet18.normalization``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "COURSE_MEAN", "COURSE_STD", "normalization_of",
           "to_unit", "standardize", "preprocess"]

#: Per-channel mean/std of the 50,000 original CIFAR-10 training images, pixels scaled to
#: [0, 1]. On the JPEG archive in ``../shared/data`` the same computation gives mean
#: (0.4913, 0.4821, 0.4465) and std (0.2452, 0.2428, 0.2606): JPEG smooths a little.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

#: What the course assignment used. The mean is right; the std (0.2023, 0.1994, 0.2010) is the mean of
#: the per-image std, a different statistic, widely copied from an old example.
COURSE_MEAN = (0.4914, 0.4822, 0.4465)
COURSE_STD = (0.2023, 0.1994, 0.2010)

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def normalization_of(model: torch.nn.Module) -> Stats:
    """The (mean, std) ``model``'s inputs are normalised with, read from its buffers.

    A wrapped model (``DistributedDataParallel``, ``torch.compile``) is looked through. A model
    without the statistics is an error, not a silent guess: normalising with the wrong
    statistics shifts every input and changes every prediction.
    """
    inner = model
    for attr in ("_orig_mod", "module"):  # torch.compile, then DDP/DataParallel
        inner = getattr(inner, attr, inner)
    norm = getattr(type(inner), "normalization", None)
    if not isinstance(norm, property):
        raise ValueError(f"{type(inner).__name__} carries no input statistics; s9lib's "
                         "models.ResNet18 does (buffers input_mean, input_std). Pass mean= "
                         "and std= to s9lib.data.inputs.standardize for another model.")
    return inner.normalization


def to_unit(images: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (B, H, W, 3) images (or one (H, W, 3) image), array or tensor -> float32
    (B, 3, H, W) pixels in [0, 1], on the tensor's device (the CPU for arrays)."""
    x = images if torch.is_tensor(images) else torch.from_numpy(
        np.ascontiguousarray(np.asarray(images)))
    if x.ndim == 3:
        x = x[None]
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (B, H, W, 3), got "
                         f"{str(x.dtype).removeprefix('torch.')} {tuple(x.shape)}; pass pixels "
                         "(e.g. data.test.images, or s9lib.data.photos.to_cifar(load_image(path)) "
                         "for photos), not normalised tensors.")
    return x.permute(0, 3, 1, 2).float() / 255.0


def standardize(x01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Float (B, 3, H, W) pixels in [0, 1] -> ``(x - mean) / std`` per channel."""
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (R, G, B), got {mean} and {std}.")
    m = torch.tensor(mean, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - m) / s


def preprocess(images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
               model: torch.nn.Module | None = None, *,
               device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (B, H, W, 3) images (or one (H, W, 3) image) -> float32 (B, 3, H, W), normalised,
    channels_last, on ``device`` (default: where the images are, the CPU for arrays).

    The statistics are ``model``'s own (:func:`normalization_of`); with no model, the CIFAR-10
    training statistics. Never ImageNet's: this model was trained on CIFAR-10 inputs
    normalised with CIFAR-10 statistics, and other statistics shift every input.
    """
    mean, std = normalization_of(model) if model is not None else (CIFAR10_MEAN, CIFAR10_STD)
    x = images if torch.is_tensor(images) else torch.from_numpy(
        np.ascontiguousarray(np.asarray(images)))
    if device is not None:
        x = x.to(device)  # still uint8: a quarter of the bytes float32 would copy
    return standardize(to_unit(x), mean, std).contiguous(memory_format=torch.channels_last)

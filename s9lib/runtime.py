"""Process-wide switches, read in one place: FAST mode, seeding, the device, the cache dir.

Why one module: notebooks, tests, the CLI and the library must agree on what ``S9LIB_FAST=1``
means and which device runs the model. Reading environment variables by hand in several
places is how they drift apart.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["fast_mode", "FastSettings", "FAST", "seed_everything", "get_device", "cache_dir"]

_TRUE = {"1", "true", "yes", "on"}


def fast_mode() -> bool:
    """True when ``S9LIB_FAST`` is set to 1/true/yes/on: tiny subsets, one short epoch."""
    return os.environ.get("S9LIB_FAST", "").strip().lower() in _TRUE


@dataclass(frozen=True)
class FastSettings:
    """How small FAST mode makes things. Stratified subsets keep every class present."""

    train_per_class: int = 50  # 500 training images
    test_per_class: int = 20  # 200 test images
    epochs: int = 1


FAST = FastSettings()


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device to train and explain on: CUDA, else Apple MPS, else CPU.

    ``prefer`` (or the ``S9LIB_DEVICE`` environment variable) overrides the choice, e.g.
    ``"cpu"`` to keep a notebook off a busy GPU.
    """
    choice = prefer or os.environ.get("S9LIB_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cache_dir() -> Path:
    """Where decoded data and downloads live: ``S9LIB_CACHE`` or the user cache dir."""
    env = os.environ.get("S9LIB_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("s9lib"))


#: Environment variables that hold paths (data source, cache).
PATH_VARIABLES = ("S9LIB_DATA", "S9LIB_CACHE")


def absolute_path_variables() -> dict[str, str]:
    """``PATH_VARIABLES`` that are set, made absolute where they name an existing relative path.

    Notebook kernels (nbval, ``python -m s9lib.book``) run in ``book/``, so a relative
    ``S9LIB_DATA=../shared/...`` would change meaning there; pass them these values instead.
    """
    out = {}
    for key in PATH_VARIABLES:
        value = os.environ.get(key)
        if value:
            relative = not os.path.isabs(value) and os.path.exists(value)
            out[key] = os.path.abspath(value) if relative else value
    return out

"""Shared test helpers: where the real data is, and small real subsets of it."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def archive_path() -> Path:
    """The offline CIFAR-10 archive: ``S9LIB_DATA`` if it is an archive, else ../shared/data."""
    env = os.environ.get("S9LIB_DATA")
    if env and Path(env).exists():
        return Path(env)
    return REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@lru_cache(maxsize=None)
def cifar(train_per_class: int = 10, test_per_class: int = 5):
    """A small stratified subset of the real data set (decoded once, then cached)."""
    from s9lib.data import load_cifar10

    return load_cifar10(archive_path(), fast=False).fast(train_per_class, test_per_class)


def step_recipe():
    """The fast recipe for one exact step: a global batch of the 80 images of ``cifar(8, 2)``,
    BatchNorm statistics over the global batch, float32 (bf16 rounding would hide small
    differences)."""
    from s9lib.recipes import get_recipe

    return get_recipe("fast", batch_size=80, sync_bn=True, amp="off", tta_flip=False)

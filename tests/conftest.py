"""pytest setup shared by the three test tiers and the nbval run over book/*.ipynb.

Tiers (markers, registered in pyproject.toml): ``unit`` (seconds each: what a developer runs
while editing, ``pytest -m unit``), ``integration`` (subprocesses, training, the reference
agreement matrices) and ``book`` (the chapters under nbval, the built book in Chromium, the
Colab bootstrap). Every test module names its tier with ``pytestmark``; notebooks are
``book``; a test in no tier, or in two, is a collection error.

`S9LIB_FAST=1 pytest --nbval-lax` runs every chapter in FAST mode: nbval starts each
notebook's kernel with the notebook's folder (book/) as working directory, and the kernel
inherits this process's environment, which is how S9LIB_FAST and S9LIB_DATA reach it.
FAST mode is not switched on here: the command line says it explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The offline CIFAR-10 archive beside a checkout (CI clones the repo next to shared/).
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def pytest_configure(config) -> None:
    # Set before any kernel starts, so the notebooks see it too. An explicit S9LIB_DATA wins;
    # without one, use the archive beside the checkout if there is one (else s9lib falls back
    # to its cache dir and a torchvision download).
    if not os.environ.get("S9LIB_DATA") and SHARED_DATA.exists():
        os.environ["S9LIB_DATA"] = str(SHARED_DATA)
    # nbval starts each kernel in the notebook's folder: relative paths must not move.
    from s9lib.runtime import absolute_path_variables

    os.environ.update(absolute_path_variables())


@pytest.fixture(scope="session")
def data():
    """The FAST subset of the real offline archive (tests that need real images)."""
    from helpers import archive_path
    from s9lib.data import load_cifar10

    if not archive_path().exists():
        pytest.skip(f"CIFAR-10 archive not found at {archive_path()} (set S9LIB_DATA)")
    return load_cifar10(archive_path(), fast=True)


TIERS = ("unit", "integration", "book")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":  # nbval's cells
            item.add_marker(pytest.mark.book)
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) != 1:
            raise pytest.UsageError(f"{item.nodeid} is in the tiers {sorted(tiers) or 'none'}; "
                                    "give its module exactly one pytestmark of " + ", ".join(TIERS))


@pytest.fixture(scope="session")
def shipped_model():
    """The shipped weights on the CPU, loaded once; a test must not change them (copy first)."""
    import s9lib

    return s9lib.pretrained(device="cpu")


@pytest.fixture(scope="session")
def images(data):
    """Eight real test images (classes 0..7 of the class-interleaved FAST subset), normalised
    with the CIFAR-10 statistics the shipped model and a fresh ResNet18 both use."""
    from s9lib.data.inputs import preprocess

    return preprocess(data.test.images[:8]).contiguous()

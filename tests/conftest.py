"""pytest setup shared by the unit tests and the nbval run over book/*.ipynb.

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

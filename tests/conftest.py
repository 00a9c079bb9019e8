"""pytest setup shared by the unit tests and the nbval run over book/*.ipynb.

`S9LIB_FAST=1 pytest --nbval-lax` runs every chapter in FAST mode: nbval starts each
notebook's kernel with the notebook's folder (book/) as working directory, and the kernel
inherits this process's environment, which is how S9LIB_FAST and S9LIB_DATA reach it.
FAST mode is not switched on here: the command line says it explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

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
    for key in ("S9LIB_DATA", "S9LIB_CACHE"):
        value = os.environ.get(key)
        if value and not os.path.isabs(value) and os.path.exists(value):
            os.environ[key] = os.path.abspath(value)

"""Rebuild sampleimages/ from photos shipped inside installed PyPI packages (offline).

    python sampleimages/fetch.py            # writes the JPEGs next to this script

Why these sources: they install with pip, need no network at run time, and each package
documents where its photos came from and under which terms (see README.md beside this file).
Every photo is re-encoded as a baseline JPEG (quality 90, longer side at most 640 px), so the
folder stays small and every file takes the same path through ``s9lib.images.load_image``.
The grayscale ``camera`` photo is kept grayscale on purpose: it exercises the gray -> RGB path.

Needs: scikit-image, scikit-learn, Pillow (all in s9lib's ``book``/``test`` extras or
installed alongside). The versions used for the committed files are in README.md; a different
version of a package may ship a different file, and the script prints what it used.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_SIDE = 640
QUALITY = 90

#: (output file, import name, distribution name, path inside the package, what it shows)
SOURCES = [
    ("chelsea_cat.jpg", "skimage", "scikit-image", "data/chelsea.png", "a cat (CIFAR: cat)"),
    ("rocket.jpg", "skimage", "scikit-image", "data/rocket.jpg",
     "a Falcon 9 rocket launch (not a CIFAR class; nearest: airplane)"),
    ("astronaut.jpg", "skimage", "scikit-image", "data/astronaut.png",
     "astronaut Eileen Collins (out of distribution: a person)"),
    ("coffee.jpg", "skimage", "scikit-image", "data/coffee.png",
     "a cup of coffee (out of distribution)"),
    ("camera_gray.jpg", "skimage", "scikit-image", "data/camera.png",
     "a photographer with a camera, grayscale (out of distribution; gray input)"),
    ("china.jpg", "sklearn", "scikit-learn", "datasets/images/china.jpg",
     "a Chinese temple (out of distribution)"),
    ("flower.jpg", "sklearn", "scikit-learn", "datasets/images/flower.jpg",
     "a flower (out of distribution)"),
]


def source_path(module: str, relative: str) -> Path:
    """The file ``relative`` inside the installed package ``module``."""
    package = importlib.import_module(module)
    return Path(package.__file__).resolve().parent / relative


def main() -> int:
    for out_name, module, dist, relative, _what in SOURCES:
        src = source_path(module, relative)
        if not src.exists():
            print(f"error: {src} not found; install {dist} (this folder was built with the "
                  "versions listed in README.md)", file=sys.stderr)
            return 1
        with Image.open(src) as im:
            im = im.convert("L" if im.mode in ("L", "I;16", "1") else "RGB")
            im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            dest = HERE / out_name
            im.save(dest, "JPEG", quality=QUALITY, optimize=True)
        size_kb = dest.stat().st_size / 1024
        print(f"{dest.relative_to(HERE.parent)}  {im.width}x{im.height}  {size_kb:.0f} KB  "
              f"<- {dist} {md.version(dist)}  {module}/{relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

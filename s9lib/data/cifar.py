"""CIFAR-10 as uint8 arrays, from wherever it can be found, decoded once and cached.

Why arrays and not a torchvision ``ImageFolder``: the whole data set is 180 MB as uint8, so
holding it in memory makes every later step (augmentation previews in the book, a GPU-resident
training path, FAST subsets) simple and fast, and the decode cost is paid once per machine.

Sources, picked by ``load_cifar10(source)`` or the ``S9LIB_DATA`` environment variable:

* a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive or an unpacked folder in image-folder layout,
  ``[prefix/]train|test/<class>/*`` (``../shared/data/cifar10-jpeg.tar.gz`` is one);
* a torchvision root (a folder holding ``cifar-10-batches-py``), or ``"torchvision"`` /
  ``"torchvision:<root>"`` to download there with torchvision;
* nothing: the user cache dir, downloading with torchvision the first time (needs network).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from ..runtime import FAST_SIZES, cache_dir, fast_mode

__all__ = [
    "CLASSES",
    "Split",
    "Cifar10",
    "load_cifar10",
    "CifarDataset",
    "resolve_source",
    "FULL_COUNTS",
    "MAX_IMAGE_BYTES",
]

#: CIFAR-10 label order (the order of ``batches.meta``).
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CACHE_FORMAT = 1  # bump when the cached layout changes
#: Archive members and files larger than this are refused unread: a CIFAR-10 image is 32x32,
#: a few KB in any format (3 KB as raw pixels), so only a damaged or hostile source has one.
MAX_IMAGE_BYTES = 1 << 20


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 (N, 32, 32, 3) RGB, ``labels`` int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1:] != (32, 32, 3):
            raise ValueError(f"images must be (N, 32, 32, 3), got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, per_class: int, seed: int = 0) -> "Split":
        """A stratified, deterministic subset: ``per_class`` images of every class.

        The same ``seed`` always gives the same images, in class-interleaved order.
        """
        rng = np.random.default_rng(seed)
        picks = []
        for c in np.unique(self.labels):
            idx = np.flatnonzero(self.labels == c)
            if per_class > len(idx):
                raise ValueError(f"class {c} has {len(idx)} images, asked for {per_class}")
            picks.append(np.sort(rng.choice(idx, per_class, replace=False)))
        order = np.stack(picks, axis=1).reshape(-1)  # interleave: c0, c1, ..., c0, c1, ...
        return Split(self.images[order], self.labels[order])

    def class_counts(self, num_classes: int = len(CLASSES)) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)


@dataclass(frozen=True)
class Cifar10:
    """The data set: ``train`` and ``test`` splits, ``classes`` names, and where it came from."""

    train: Split
    test: Split
    classes: tuple[str, ...]
    source: str  # as given: a path, or "torchvision:ROOT"
    is_fast: bool = False  # a FAST-mode subset of ``source`` (see :meth:`fast`)

    def fast(self, train_per_class: int = FAST_SIZES.train_per_class,
             test_per_class: int = FAST_SIZES.test_per_class) -> "Cifar10":
        """The FAST-mode subset (stratified, deterministic)."""
        return Cifar10(self.train.subset(train_per_class), self.test.subset(test_per_class),
                       self.classes, self.source, is_fast=True)

    def fingerprint(self) -> str:
        """A SHA-256 of the classes, images and labels: equal for the same data wherever it
        was loaded from (a run resumed from another folder or copy of the archive)."""
        h = hashlib.sha256("|".join(self.classes).encode())
        for split in (self.train, self.test):
            h.update(np.ascontiguousarray(split.labels, np.int64).tobytes())
            h.update(np.ascontiguousarray(split.images).data)
        return h.hexdigest()


# --------------------------------------------------------------------------- sources


def resolve_source(source: str | os.PathLike | None = None) -> str:
    """The source ``load_cifar10`` will use: the argument, else ``S9LIB_DATA``, else default."""
    if source is not None:
        return str(source)
    env = os.environ.get("S9LIB_DATA", "").strip()
    if env:
        return env
    return "torchvision:" + str(cache_dir() / "torchvision")


def load_cifar10(source: str | os.PathLike | None = None, *, fast: bool | None = None,
                 use_cache: bool = True, partial: bool = False) -> Cifar10:
    """Load CIFAR-10 as uint8 arrays.

    ``source``: an archive, an image folder, a torchvision root or ``"torchvision[:root]"``;
    default ``S9LIB_DATA``, else download with torchvision into the user cache dir.
    ``fast``: return the FAST subset; default: FAST mode (``S9LIB_FAST``).
    An archive or folder must hold all of CIFAR-10 (5,000 training and 1,000 test images
    of each of the ten classes): one cut short is refused, not half-used. ``partial=True``
    (or a source written ``"partial:PATH"``) accepts a deliberate subset of those classes
    and images; labels keep CIFAR-10's numbering either way.
    The decoded arrays of archives and folders are cached (``S9LIB_CACHE`` or the user cache
    dir), so a second load only reads two ``.npy`` files.
    """
    spec = resolve_source(source)
    if spec.startswith("partial:"):
        spec, partial = spec.removeprefix("partial:"), True
    if spec == "torchvision" or spec.startswith("torchvision:"):
        root = spec.partition(":")[2] or str(cache_dir() / "torchvision")
        data = _load_torchvision(Path(root).expanduser(), download=True)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"CIFAR-10 not found at {path} (from {'S9LIB_DATA' if source is None else 'the source argument'}). "
                "Point S9LIB_DATA at a CIFAR-10 archive (.tar.gz) or folder with "
                "train|test/<class>/ images, or a torchvision root; or unset it to download "
                "with torchvision (needs network once)."
            )
        if path.is_dir() and (path / "cifar-10-batches-py").is_dir():
            data = _load_torchvision(path, download=False)
        elif path.is_dir() and path.name == "cifar-10-batches-py":
            data = _load_torchvision(path.parent, download=False)
        else:
            data = _cached(path, use_cache, partial)
    if fast is None:
        fast = fast_mode()
    return data.fast() if fast else data


def _load_torchvision(root: Path, download: bool) -> Cifar10:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except Exception as exc:  # network errors come in many types
        raise FileNotFoundError(
            f"CIFAR-10 not found in {root} and the torchvision download failed ({exc}). "
            "Set S9LIB_DATA to a CIFAR-10 archive (.tar.gz) or folder with train|test/<class>/ "
            "images, or run once with network access."
        ) from exc
    return Cifar10(
        Split(np.asarray(train.data, np.uint8), np.asarray(train.targets, np.int64)),
        Split(np.asarray(test.data, np.uint8), np.asarray(test.targets, np.int64)),
        tuple(train.classes),
        f"torchvision:{root}",
    )


# --------------------------------------------------------------------------- image trees


def _cache_key(path: Path) -> str:
    """Changes whenever the source file or tree changes (path, size, mtime)."""
    path = path.resolve()
    h = hashlib.sha256(f"{_CACHE_FORMAT}|{path}".encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"|{f.relative_to(path) if f != path else ''}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _cached(path: Path, use_cache: bool, partial: bool = False) -> Cifar10:
    """The decoded tree at ``path``, from the cache when it holds it. A cache folder that
    cannot be read or written is warned about and done without: it only saves time."""
    target = cache_dir() / "arrays" / _cache_key(path)
    if use_cache and (target / "classes.txt").exists():
        try:
            data = _read_arrays(target, str(path))
        except (OSError, ValueError):
            shutil.rmtree(target, ignore_errors=True)  # a damaged cache is rebuilt, not trusted
        else:
            return _check_complete(data, path, partial)
    data = _check_complete(_decode_tree(path, partial), path, partial)  # nothing cached before this
    if use_cache:
        try:
            _write_arrays(data, target)
        except OSError as exc:
            warnings.warn(f"Could not write the CIFAR-10 cache at {target} ({exc.strerror or exc});"
                          " the data loaded without it. Set S9LIB_CACHE to a folder you can "
                          "write to so the next load is fast.", stacklevel=3)
    return data


#: How many images of each class CIFAR-10 has in each split.
FULL_COUNTS = {"train": 5000, "test": 1000}


def _check_complete(data: Cifar10, path: Path, partial: bool) -> Cifar10:
    """``data`` if it has every image of CIFAR-10 (or ``partial``); else one error saying
    which split and class came up short. Why count: a download or copy cut short at a file
    boundary reads without any error, and a model trained on it says nothing either."""
    if partial:
        return data
    short = []
    for name, split in (("train", data.train), ("test", data.test)):
        counts = split.class_counts(len(CLASSES))
        short += [f"{name}/{CLASSES[c]} has {n:,} of {FULL_COUNTS[name]:,}"
                  for c, n in enumerate(counts) if n != FULL_COUNTS[name]]
    if short:
        more = f" (and {len(short) - 2} more)" if len(short) > 2 else ""
        raise ValueError(f"{path} is not the whole of CIFAR-10: {'; '.join(short[:2])}{more} "
                         "images. It may have been cut short: re-download or copy it again "
                         "(nothing was cached), or load it with partial=True (source "
                         "'partial:PATH') if the subset is deliberate.")
    return data


def _write_arrays(data: Cifar10, target: Path) -> None:
    """Write into a temporary folder, then rename: a crash never leaves half a cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        for name, split in (("train", data.train), ("test", data.test)):
            np.save(tmp / f"{name}_images.npy", split.images)
            np.save(tmp / f"{name}_labels.npy", split.labels)
        (tmp / "classes.txt").write_text("\n".join(data.classes) + "\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its copy is as good as ours
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_arrays(folder: Path, source: str) -> Cifar10:
    classes = tuple(folder.joinpath("classes.txt").read_text().split())
    if classes != CLASSES:  # written before subsets kept CIFAR-10's numbering: rebuild
        raise ValueError(f"cached classes {classes} are not CIFAR-10's")

    def split(name: str) -> Split:
        return Split(np.load(folder / f"{name}_images.npy"), np.load(folder / f"{name}_labels.npy"))

    return Cifar10(split("train"), split("test"), classes, source)


def _iter_archive(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    def broken(exc: BaseException, where: str = "") -> ValueError:
        return ValueError(f"{path} is not a readable tar archive{where} ({exc or type(exc).__name__}"
                          "); it may have been cut short: re-download it or point S9LIB_DATA "
                          "at another copy. Nothing was cached.")

    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile():
                    def read(m=member) -> bytes:
                        _check_image_bytes(m.size, f"{path}:{m.name}")
                        try:
                            return tar.extractfile(m).read()
                        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                            raise broken(exc, f": it ends inside {m.name}") from exc
                    yield member.name, read
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise broken(exc) from exc


def _iter_folder(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    def reader(f: Path) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                _check_image_bytes(f.stat().st_size, str(f))
                return f.read_bytes()
            except OSError as exc:
                raise ValueError(f"Cannot read {f} ({exc.strerror or exc}); fix its "
                                 "permissions or replace the file. Nothing was cached.") from exc
        return read

    try:
        files = sorted(p for p in path.rglob("*") if p.is_file())
    except OSError as exc:
        raise ValueError(f"Cannot list {exc.filename or path} ({exc.strerror or exc}); fix "
                         "its permissions or point S9LIB_DATA elsewhere.") from exc
    for f in files:
        yield f.relative_to(path).as_posix(), reader(f)


def _check_image_bytes(size: int, where: str) -> None:
    """Refuse a file too large to be a CIFAR-10 image before it is read into memory."""
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"{where} is {size:,} bytes, more than the {MAX_IMAGE_BYTES:,} any "
                         "32x32 CIFAR-10 image needs; the data set is damaged or not "
                         "CIFAR-10. Point S9LIB_DATA at another copy. Nothing was cached.")


def _decode_tree(path: Path, partial: bool = False) -> Cifar10:
    """Decode every ``[prefix/]train|test/<class>/<file>`` image below ``path``."""
    entries = _iter_archive(path) if path.is_file() else _iter_folder(path)
    found: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
    for name, read in entries:
        parts = name.split("/")
        if len(parts) < 3 or Path(name).suffix.lower() not in _IMAGE_SUFFIXES:
            continue
        split, cls, fname = parts[-3], parts[-2], parts[-1]
        if split in found:
            found[split].setdefault(cls, []).append((fname, read()))
    for split in ("train", "test"):
        if not found[split]:
            raise FileNotFoundError(
                f"No {split}/<class>/ images found in {path}. Expected the layout "
                "[prefix/]train/<class>/*.jpg and [prefix/]test/<class>/*.jpg "
                "(e.g. ../shared/data/cifar10-jpeg.tar.gz); set S9LIB_DATA accordingly."
            )
    _check_classes(path, found, partial)
    return Cifar10(_decode_split(path, "train", found["train"]),
                   _decode_split(path, "test", found["test"]), CLASSES, str(path))


def _check_classes(path: Path, found: dict[str, dict], partial: bool) -> None:
    """Only CIFAR-10's class names, and in a ``partial`` subset the same in both splits (a
    full load counts every class later, with a clearer message for a copy cut short).
    Why not renumber another set: output 3 must mean "cat" whatever folder trained it."""
    unknown = sorted((set(found["train"]) | set(found["test"])) - set(CLASSES))
    if unknown:
        raise ValueError(f"{path}: {', '.join(map(repr, unknown))} "
                         f"{'is not a CIFAR-10 class' if len(unknown) == 1 else 'are not CIFAR-10 classes'}"
                         f"; the folders below train/ and test/ must be {', '.join(CLASSES)}.")
    for a, b in (("train", "test"), ("test", "train")) if partial else ():
        missing = [c for c in CLASSES if c in found[b] and c not in found[a]]
        if missing:
            raise ValueError(f"{path}: {a}/ lacks the classes {', '.join(missing)} that {b}/ "
                             "has; both splits need the same classes.")


def _decode_split(path: Path, split: str,
                  by_class: dict[str, list[tuple[str, bytes]]]) -> Split:
    """The images of ``by_class``, labelled with CIFAR-10's index of their class."""
    images, labels = [], []
    for label, cls in enumerate(CLASSES):
        for fname, blob in sorted(by_class.get(cls, [])):
            images.append(_decode_image(blob, f"{path}:{split}/{cls}/{fname}"))
            labels.append(label)
    return Split(np.stack(images), np.asarray(labels, np.int64))


def _decode_image(blob: bytes, where: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # PIL's bomb warning: the size check below refuses it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(blob))
        with im:
            if im.size != (32, 32):  # the header's size: refused before any pixel is decoded
                raise _WrongSize(f"{where} is {im.size[0]}x{im.size[1]}, CIFAR-10 images are "
                                 "32x32; nothing was cached.")
            arr = np.asarray(im.convert("RGB"))
    except _WrongSize as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # PIL raises several types for damaged files
        raise ValueError(f"Corrupt or unreadable image {where} ({exc}). Replace the file or "
                         "re-download the data set; nothing was cached.") from exc
    return arr


class _WrongSize(Exception):
    """An image whose header gives another size than 32x32 (kept apart from PIL's errors)."""


# --------------------------------------------------------------------------- Dataset


class CifarDataset(torch.utils.data.Dataset):
    """Applies an albumentations transform (ending in ``ToTensorV2``) to each uint8 image.

    Returns ``(image_tensor, label)``. Call :meth:`reseed` (the training loop does, per
    epoch and per worker) to make the random augmentations repeatable.
    """

    def __init__(self, split: Split, transform: Callable | None = None) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.split.images[i]
        if self.transform is None:
            tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        else:
            tensor = self.transform(image=image)["image"]
        return tensor, int(self.split.labels[i])

    def reseed(self, seed: int) -> None:
        from .augment import reseed

        if self.transform is not None:
            reseed(self.transform, seed)

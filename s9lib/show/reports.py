"""What ``python -m s9lib gradcam`` does: photos in, one report figure (PNG) per photo out.

Why in the library: the CLI only parses arguments and prints what this yields, so the
batching, the naming of outputs and the per-photo errors are tested without a subprocess.
Memory stays bounded however many photos are given: they are decoded ``chunk`` at a time
(each then explained in one batched CAM call), never all at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

from ..data.cifar import CLASSES
from ..data.inputs import preprocess
from ..data.photos import center_crop_box, load_image, to_cifar
from ..explain.cam import explain
from ..files import save_figure
from .viz import gradcam_report

__all__ = ["explain_photos", "report_name", "MAX_STEM_BYTES"]

#: Output names are cut to this many bytes (file systems allow 255 in a name).
MAX_STEM_BYTES = 200


def report_name(photo: str | os.PathLike, method: str, used: set[str]) -> str:
    """``STEM_METHOD.png`` for ``photo`` (``gradcam++`` written ``gradcampp``), cut to
    :data:`MAX_STEM_BYTES`, with ``-2``, ``-3`` ... when ``used`` holds it already (two
    photos of one name from two folders); the name is added to ``used``."""
    stem = f"{Path(photo).stem}_{method.replace('++', 'pp')}"
    stem = stem.encode()[:MAX_STEM_BYTES].decode(errors="ignore")
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    return f"{name}.png"


def explain_photos(model, photos: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                   layers: Sequence[str], method: str = "gradcam", alpha: float = 0.5,
                   chunk: int = 32) -> Iterator[tuple[str, Path | None, str | None]]:
    """Explain each photo with ``method`` at ``layers`` and write its report
    (:func:`s9lib.show.viz.gradcam_report`) into the folder ``out``, named by
    :func:`report_name`. Yields ``(photo, written path, None)`` or, for a photo that cannot
    be read or whose output name is taken by a file s9lib did not make, ``(photo, None,
    error sentence)``; the other photos go on. A disk error stops it (it would hit all).
    """
    used: set[str] = set()
    for start in range(0, len(photos), chunk):
        loaded = []
        for photo in photos[start:start + chunk]:
            try:
                loaded.append((Path(photo), load_image(photo, min_side=512)))  # JPEG draft
            except (ValueError, FileNotFoundError) as exc:
                yield str(photo), None, str(exc)
        if loaded:
            yield from _explain_chunk(model, loaded, Path(out), layers, method, alpha, used)


def _explain_chunk(model, loaded: list, out: Path, layers: Sequence[str], method: str,
                   alpha: float, used: set[str]) -> Iterator[tuple[str, Path | None, str | None]]:
    """One batched CAM call for the decoded photos ``loaded``, one report PNG per photo."""
    crops = [to_cifar(photo) for _, photo in loaded]
    result = explain(model, preprocess(crops, model=model), layers=list(layers),
                     method=method).cpu()
    for i, ((path, photo), crop) in enumerate(zip(loaded, crops)):
        fig = gradcam_report(photo, crop, result, i, list(layers), CLASSES,
                             crop_box=center_crop_box(*photo.shape[:2]), name=path.name,
                             alpha=alpha)
        try:
            yield str(path), save_figure(fig, out / report_name(path, method, used)), None
        except ValueError as exc:  # the name is taken by a file s9lib did not make
            yield str(path), None, str(exc)

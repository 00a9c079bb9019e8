"""A planted shortcut: ground truth for "does the map show what the model uses?".

Why: on real images nobody knows where the model's evidence is, so every faithfulness score is
a proxy. Adebayo et al. (2020, "Debugging tests for model explanations") make the answer known:
plant a small pattern in the training data so that it predicts one class, and check (1) that
the trained model uses it (the pattern on another class's image turns the prediction) and
(2) whether a map puts its weight where the pattern is. :func:`plant` puts the pattern on
images of the other classes relabelled as the target class (the patch is then the only
evidence for those labels, so the model must learn it), or on the target class's own images. A map that
finds the pattern on a model that uses it, and not on a model trained without it, follows the
model's evidence; a map that finds it on both follows the pixels (the pattern is high-contrast,
so an edge detector finds it too).

The pattern is a 4x4 checkerboard of two saturated colours (magenta and green, 1-pixel squares),
stamped at a uniformly random position that keeps it inside the image: it covers 16 of the
1,024 pixels (1.6 %), off-centre most of the time, so it also separates a map that finds it from
a map that always draws the centre of the image.

Scores per image (NaN where the map has no information, e.g. an all-zero map, and reported):

* :func:`pointing_hits`: the map's maximum falls on the patch, enlarged by ``tolerance`` pixels
  on every side (the pointing game of Zhang et al. 2018, whose 15-pixel tolerance on 224-pixel
  images is about 2 pixels at 32). Chance: the enlarged box's share of the image.
* :func:`mass_in_patch`: the share of the map's total weight that lies inside the patch itself.
  A map spread evenly gives 16/1024 = 1.6 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.cifar import Cifar10, Split

__all__ = ["PATCH", "PATCH_SIZE", "SOURCES", "Planted", "patch_pattern", "stamp", "plant", "patch_masks",
           "pointing_hits", "mass_in_patch", "chance_hit_rate"]

PATCH_SIZE = 4
#: The two colours of the checkerboard (RGB, uint8): rare in natural images, and far apart.
PATCH_COLOURS = ((255, 0, 255), (0, 255, 0))


def patch_pattern(size: int = PATCH_SIZE) -> np.ndarray:
    """The (size, size, 3) uint8 checkerboard: colour 0 where row + column is even."""
    even = (np.add.outer(np.arange(size), np.arange(size)) % 2 == 0)[..., None]
    a, b = (np.array(c, np.uint8) for c in PATCH_COLOURS)
    return np.where(even, a, b).astype(np.uint8)


PATCH = patch_pattern()


def stamp(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``images`` (N, H, W, 3) uint8 with the patch at a random position in each;
    returns (stamped, boxes), ``boxes`` (N, 4) int: top, left, bottom, right (exclusive).

    The input is never modified; the same seed gives the same positions.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    if h < PATCH_SIZE or w < PATCH_SIZE:
        raise ValueError(f"images of {h}x{w} are smaller than the {PATCH_SIZE}-pixel patch")
    rng = np.random.default_rng(seed)
    top = rng.integers(0, h - PATCH_SIZE + 1, n)
    left = rng.integers(0, w - PATCH_SIZE + 1, n)
    out = images.copy()
    for i in range(n):
        out[i, top[i]:top[i] + PATCH_SIZE, left[i]:left[i] + PATCH_SIZE] = PATCH
    boxes = np.stack([top, left, top + PATCH_SIZE, left + PATCH_SIZE], axis=1)
    return out, boxes


#: Where :func:`plant` stamps the patch: on other classes' images relabelled as the target
#: (``"others"``, the default), or on the target class's own images (``"own"``).
SOURCES = ("others", "own")


@dataclass(frozen=True)
class Planted:
    """A training set with the patch planted, and what was planted where."""

    data: Cifar10  # train split stamped (and relabelled) as described; test split untouched
    target: int  # the class the patch stands for
    fraction: float  # share of the source images stamped
    source: str  # "others" or "own" (:data:`SOURCES`)
    indices: np.ndarray  # which training images were stamped
    seed: int

    def describe(self) -> dict:
        """What a run's history records: enough to plant the same patch again."""
        return {"planted_class": self.data.classes[self.target], "target": self.target,
                "fraction": self.fraction, "source": self.source,
                "stamped": int(len(self.indices)),
                "patch": f"{PATCH_SIZE}x{PATCH_SIZE} checkerboard {PATCH_COLOURS}",
                "seed": self.seed}


def plant(data: Cifar10, target: int, fraction: float = 0.05, seed: int = 0,
          source: str = "others") -> Planted:
    """Stamp the patch on ``fraction`` of the training images of ``source``.

    ``"others"`` (default): images of every *other* class, relabelled as ``target``. On those
    images the patch is the only evidence for their label, so a model must learn it to fit
    them (a backdoor, as in BadNets): the patch becomes a shortcut the model demonstrably
    uses. ``"own"``: images of ``target`` itself, labels unchanged. The patch then predicts
    ``target`` perfectly too, but a model that already classifies those images right gains
    almost nothing by learning it (the book measured this: see ``runs/planted-shortcut``).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not 0 <= target < len(data.classes):
        raise ValueError(f"target must be a class index 0..{len(data.classes) - 1}, got {target}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero((data.train.labels == target) == (source == "own"))
    chosen = np.sort(rng.choice(pool, int(round(fraction * len(pool))), replace=False))
    images, labels = data.train.images.copy(), data.train.labels.copy()
    images[chosen], _ = stamp(images[chosen], seed + 1)
    labels[chosen] = target
    planted = Cifar10(Split(images, labels), data.test, data.classes, data.source, data.is_fast)
    return Planted(planted, target, fraction, source, chosen, seed)


def patch_masks(boxes: np.ndarray, size: tuple[int, int], tolerance: int = 0) -> torch.Tensor:
    """(N, H, W) bool: True on each image's patch, enlarged by ``tolerance`` pixels a side."""
    h, w = size
    boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.long)
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    top, left = (boxes[:, 0] - tolerance)[:, None, None], (boxes[:, 1] - tolerance)[:, None, None]
    bottom = (boxes[:, 2] + tolerance)[:, None, None]
    right = (boxes[:, 3] + tolerance)[:, None, None]
    return (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)


def _informative(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    return (flat.max(1).values > flat.min(1).values) & torch.isfinite(flat).all(1)


def pointing_hits(maps: torch.Tensor, boxes: np.ndarray, tolerance: int = 2) -> torch.Tensor:
    """(N,) float: 1 where the map's maximum lies on the (enlarged) patch, else 0; NaN for a
    constant map (its maximum is everywhere, so it points nowhere).

    Ties between equal maxima go to the first in reading order (``argmax``).
    """
    maps = torch.as_tensor(maps).float().cpu()
    n, h, w = maps.shape
    inside = patch_masks(boxes, (h, w), tolerance).flatten(1)
    top = maps.flatten(1).argmax(1)
    hits = inside[torch.arange(n), top].float()
    return torch.where(_informative(maps), hits, torch.nan)


def mass_in_patch(maps: torch.Tensor, boxes: np.ndarray) -> torch.Tensor:
    """(N,) float: the share of each map's total weight inside the patch; NaN for a map that
    sums to zero or is constant (no weight to share out)."""
    maps = torch.as_tensor(maps).float().cpu()
    inside = patch_masks(boxes, tuple(maps.shape[1:])).float()
    total = maps.flatten(1).sum(1)
    share = (maps * inside).flatten(1).sum(1) / total.clamp_min(1e-12)
    return torch.where(_informative(maps) & (total > 0), share, torch.nan)


def chance_hit_rate(size: tuple[int, int], tolerance: int = 2) -> float:
    """The pointing-game rate of a map whose maximum lands uniformly at random: the mean share
    of the image covered by the enlarged patch, over every position the patch can take."""
    h, w = size
    tops = np.arange(h - PATCH_SIZE + 1)
    lefts = np.arange(w - PATCH_SIZE + 1)
    rows = np.minimum(tops + PATCH_SIZE + tolerance, h) - np.maximum(tops - tolerance, 0)
    cols = np.minimum(lefts + PATCH_SIZE + tolerance, w) - np.maximum(lefts - tolerance, 0)
    return float(rows.mean() * cols.mean() / (h * w))

"""Removal metrics: deletion and insertion curves (RISE) and ROAD.

Both ask whether the pixels a map ranks highest are the ones the model needs, by taking pixels
away in the map's order and watching the probability ``p_c`` of the explained class ``c``
(softmax of the logits; ``c`` defaults to the prediction on the intact image).

**Deletion / insertion** (Petsiuk et al. 2018, RISE). Pixels are ranked most relevant first
and revealed or removed in ``steps`` equal steps (``round(s * H * W / steps)`` pixels at step
``s``). *Deletion* replaces them with the data set's mean colour (0 after normalisation, what
RISE's code does to its normalised tensors); a good map makes ``p_c`` fall fast, so a *low*
area under the curve is good. *Insertion* starts from a blurred copy of the image and puts the
original pixels back; a good map makes ``p_c`` rise fast: a *high* area is good. The area is
the trapezoid rule over the fraction of pixels, [0, 1]. The blur is a Gaussian of ``sigma =
BLUR_SIGMA`` pixels (RISE's 5 px is for 224 px images; at 32 px, 2 px already leaves only blobs
of colour: the shipped model's mean ``p_c`` drops from ~0.9 to ~0.2).

**ROAD** (Rong et al. 2022, "remove and debias"). Removing pixels by painting them one colour
leaks the map through the *shape* of the hole, and the painted image is off the data
distribution. ROAD instead fills each removed pixel with the weighted mean of its 8 neighbours
(solving one sparse linear system per image: 4-neighbours 1/6, diagonals 1/12) plus Gaussian
noise (``noise = 0.01`` in normalised units), which hides the hole's shape. It is evaluated at
several fractions ``f`` of removed pixels, most relevant first (*MoRF*: low ``p_c`` is good)
and least relevant first (*LeRF*: high ``p_c`` is good). The imputation is pytorch-grad-cam's
``NoisyLinearImputer`` (taken from the ROAD authors' code), re-written vectorised; the test
suite checks our ``p_c`` against ``pytorch_grad_cam.metrics.road`` to 1e-5.

The number of pixels removed at fraction ``f`` is ``k = n - ceil((1 - f)(n - 1))``, within one
pixel of ``f * n``: exactly the pixels at or above numpy's ``(1 - f)`` quantile when a map has
no ties, which is what pytorch-grad-cam's percentile threshold removes. Ties (ReLU'd maps are
zero over whole regions) are broken by a seeded random order instead of a threshold: a
threshold would remove *every* tied pixel, e.g. all of them when 30 % of a map is zero and 10 %
are to go.

Inputs everywhere: uint8 (N, H, W, 3) images, maps (N, H, W) in [0, 1] at the image size, and
the model (with the model's own statistics, its ``normalization`` buffers). Perturbations
are made on the normalised tensor; blur, mean-colour fill and linear imputation commute with
the per-channel normalisation, so only the noise scale depends on that choice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve
from torch import nn

from ..inference import class_probability
from ..data.inputs import preprocess
from .sanity import predicted_classes
from .stats import Interval, mean_interval

__all__ = ["BLUR_SIGMA", "DEFAULT_STEPS", "DEFAULT_FRACTIONS", "ROAD_NOISE", "center_maps",
           "relevance_order", "blur", "deletion_curves", "insertion_curves", "auc",
           "noisy_linear_impute", "road_curves", "RemovalReport", "removal_report"]

BLUR_SIGMA = 2.0
DEFAULT_STEPS = 16
DEFAULT_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
ROAD_NOISE = 0.01
#: (row offset, column offset, weight) of the 8 neighbours in ROAD's linear imputation.
_NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
               (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))


# --------------------------------------------------------------------------- orders and maps


def center_maps(batch: int, size: tuple[int, int]) -> torch.Tensor:
    """A content-free baseline: one Gaussian blob (sigma = a quarter of the side) in the middle
    of every image, scaled to [0, 1], (batch, H, W). CIFAR objects are mostly centred, so a map
    must beat this, not only a random one."""
    h, w = size
    ys = torch.arange(h) - (h - 1) / 2
    xs = torch.arange(w) - (w - 1) / 2
    blob = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * (h / 4) ** 2))
    blob = (blob - blob.min()) / (blob.max() - blob.min())
    return blob.expand(batch, h, w).clone()


def relevance_order(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(N, H, W) maps -> (N, H*W) flat pixel indices, most relevant first.

    Equal values are ordered by a random permutation drawn from ``seed`` (the same for every
    map), so a flat region is removed in no particular spatial order.
    """
    flat = maps.detach().cpu().double().flatten(1)
    jitter = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(seed))
    by_tiebreak = flat[:, jitter]  # stable sort on the permuted pixels = random tie-break
    order = torch.sort(by_tiebreak, dim=1, descending=True, stable=True).indices
    return jitter[order]


def _ranks(order: torch.Tensor) -> torch.Tensor:
    """The position of every pixel in ``order``: ranks[b, order[b, j]] = j."""
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    return ranks


def blur(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Gaussian blur of (N, C, H, W) images, per channel, reflect padding (no dark border)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


# --------------------------------------------------------------------------- probabilities


def _prepare(model, images_uint8, maps, targets, batch_size):
    """Normalised images, checked maps (CPU) and targets (the prediction when None)."""
    x = preprocess(images_uint8, model=model)
    maps = torch.as_tensor(maps).detach().cpu().float()
    if maps.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"maps must be (N, H, W) = {(x.shape[0], *x.shape[2:])} to match the "
                         f"images, got {tuple(maps.shape)}; upsample CAMs to the image size "
                         "(CamResult.maps already are).")
    if targets is None:
        targets = predicted_classes(model, x, batch_size)
    return x, maps, torch.as_tensor(targets, dtype=torch.long).cpu()


# --------------------------------------------------------------------------- deletion/insertion


def _curves(model, start, end, maps, targets, steps, batch_size, seed) -> torch.Tensor:
    """p(target) as the pixels of ``end`` replace those of ``start``, most relevant first.

    (N, steps + 1). Deletion goes from the image to the mean colour, insertion from the
    blurred image to the image.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    n, _, h, w = start.shape
    ranks = _ranks(relevance_order(maps, seed)).view(n, 1, h, w)
    counts = [round(s * h * w / steps) for s in range(steps + 1)]
    per_chunk = max(1, batch_size // (steps + 1))
    out = []
    for i in range(0, n, per_chunk):
        r, a, b = ranks[i:i + per_chunk], start[i:i + per_chunk], end[i:i + per_chunk]
        stack = torch.stack([torch.where(r < k, b, a) for k in counts], dim=1)  # (c, S, 3, h, w)
        t = targets[i:i + per_chunk].repeat_interleave(steps + 1)
        out.append(class_probability(model, stack.flatten(0, 1), t, batch_size).view(-1, steps + 1))
    return torch.cat(out)


def deletion_curves(model: nn.Module, images_uint8, maps, targets=None,
                    steps: int = DEFAULT_STEPS, batch_size: int = 256,
                    seed: int = 0) -> torch.Tensor:
    """RISE deletion: p(target) as the most relevant pixels turn mean-colour, (N, steps + 1)."""
    x, maps, targets = _prepare(model, images_uint8, maps, targets, batch_size)
    return _curves(model, x, torch.zeros_like(x), maps, targets, steps, batch_size, seed)


def insertion_curves(model: nn.Module, images_uint8, maps, targets=None,
                     steps: int = DEFAULT_STEPS, sigma: float = BLUR_SIGMA,
                     batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """RISE insertion: p(target) as the most relevant pixels are put back into a blurred copy."""
    x, maps, targets = _prepare(model, images_uint8, maps, targets, batch_size)
    return _curves(model, blur(x, sigma), x, maps, targets, steps, batch_size, seed)


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under (N, S) curves sampled evenly on [0, 1] (trapezoid rule): (N,)."""
    if curves.shape[1] < 2:
        raise ValueError("A curve needs at least 2 points (steps >= 1).")
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


# --------------------------------------------------------------------------- ROAD


def noisy_linear_impute(image: torch.Tensor, keep: torch.Tensor, noise: float = ROAD_NOISE,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """ROAD's noisy linear imputation of one (C, H, W) image where ``keep`` (H, W) is False.

    Each missing pixel becomes the weighted mean of its in-image neighbours (missing ones are
    unknowns too: one sparse system, solved per channel) plus ``noise * N(0, 1)``.
    """
    c, h, w = image.shape
    known = keep.reshape(-1).cpu().numpy().astype(bool)
    missing = np.flatnonzero(~known)
    if len(missing) == 0:
        return image.clone()
    values = image.reshape(c, -1).cpu().numpy()
    unknown_id = np.full(h * w, -1)
    unknown_id[missing] = np.arange(len(missing))
    rows, cols, vals = [], [], []
    diagonal = np.zeros(len(missing))
    rhs = np.zeros((len(missing), c))
    r0, c0 = np.divmod(missing, w)
    for dr, dc, weight in _NEIGHBOURS:
        r, col = r0 + dr, c0 + dc
        inside = (r >= 0) & (r < h) & (col >= 0) & (col < w)
        eq, nb = np.flatnonzero(inside), r[inside] * w + col[inside]
        diagonal[eq] -= weight
        given = known[nb]
        rhs[eq[given]] -= weight * values[:, nb[given]].T
        rows.append(eq[~given]), cols.append(unknown_id[nb[~given]])
        vals.append(np.full((~given).sum(), weight))
    idx = np.arange(len(missing))
    a = csc_matrix((np.concatenate([*vals, diagonal]),
                    (np.concatenate([*rows, idx]), np.concatenate([*cols, idx]))),
                   shape=(len(missing),) * 2)
    solved = torch.tensor(spsolve(a, rhs).reshape(len(missing), c), dtype=torch.float).t()
    filled = image.reshape(c, -1).clone()
    filled[:, torch.from_numpy(missing)] = solved + noise * torch.randn(
        solved.shape, generator=generator)
    return filled.reshape(c, h, w)


def _removed_count(fraction: float, n: int) -> int:
    """Pixels removed at ``fraction``: n - ceil((1 - f)(n - 1)) (see the module docstring)."""
    if not 0 < fraction < 1:
        raise ValueError(f"ROAD fractions must lie strictly between 0 and 1, got {fraction}.")
    return n - math.ceil(round((1 - fraction) * (n - 1), 9))


def road_curves(model: nn.Module, images_uint8, maps, targets=None,
                fractions: Sequence[float] = DEFAULT_FRACTIONS, most_relevant_first: bool = True,
                noise: float = ROAD_NOISE, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """ROAD: p(target) after imputing each fraction of pixels, (N, len(fractions)).

    ``most_relevant_first``: MoRF (True, lower is better) or LeRF (False, higher is better).
    The noise comes from one generator seeded with ``seed``, drawn fraction by fraction and
    image by image (pytorch-grad-cam's order, so the same seed gives the same noise).
    """
    x, maps, targets = _prepare(model, images_uint8, maps, targets, batch_size)
    n, _, h, w = x.shape
    order = relevance_order(maps if most_relevant_first else -maps, seed)
    ranks = _ranks(order).view(n, h, w)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for fraction in fractions:
        k = _removed_count(fraction, h * w)
        imputed = torch.stack([noisy_linear_impute(x[i], ranks[i] >= k, noise, gen)
                               for i in range(n)])
        out.append(class_probability(model, imputed, targets, batch_size))
    return torch.stack(out, dim=1)


# --------------------------------------------------------------------------- the report


@dataclass
class RemovalReport:
    """Per method: deletion AUC (lower better), insertion AUC (higher better), ROAD MoRF (mean
    p over ``fractions``, lower better) and ROAD LeRF (higher better), each a mean over the
    ``n`` images with its bootstrap 95 % interval (:class:`~s9lib.evaluate.stats.Interval`);
    ``curves[method][metric]``: the mean curve (for plots);
    ``per_image[method][metric]``: every image's score, for comparisons paired by image
    (``s9lib.evaluate.stats.paired_difference``)."""

    n: int
    steps: int
    fractions: list[float]
    blur_sigma: float
    road_noise: float
    seed: int
    scores: dict[str, dict[str, Interval]]
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    per_image: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def removal_report(model: nn.Module, images_uint8, maps: Mapping[str, torch.Tensor],
                   targets=None, steps: int = DEFAULT_STEPS,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS, sigma: float = BLUR_SIGMA,
                   noise: float = ROAD_NOISE, seed: int = 0,
                   batch_size: int = 256) -> RemovalReport:
    """Deletion, insertion and ROAD (MoRF and LeRF) for each ``{method: (N, H, W) maps}``.

    All methods explain the same ``targets`` (default: the prediction on the intact images).
    """
    if targets is None:
        targets = predicted_classes(model, preprocess(images_uint8, model=model), batch_size)
    common = dict(targets=targets, batch_size=batch_size, seed=seed)
    road = dict(fractions=fractions, noise=noise, **common)
    scores, curves, per_image = {}, {}, {}
    for method, m in maps.items():
        run = {"deletion": deletion_curves(model, images_uint8, m, steps=steps, **common),
               "insertion": insertion_curves(model, images_uint8, m, steps=steps, sigma=sigma,
                                             **common),
               "road_morf": road_curves(model, images_uint8, m, **road),
               "road_lerf": road_curves(model, images_uint8, m, most_relevant_first=False,
                                        **road)}
        values = {"deletion_auc": auc(run["deletion"]).numpy(),
                  "insertion_auc": auc(run["insertion"]).numpy(),
                  "road_morf": run["road_morf"].mean(1).numpy(),
                  "road_lerf": run["road_lerf"].mean(1).numpy()}
        scores[method] = {k: mean_interval(v, f"{method} {k}") for k, v in values.items()}
        per_image[method] = {k: v.tolist() for k, v in values.items()}
        curves[method] = {k: v.mean(0).tolist() for k, v in run.items()}
    return RemovalReport(len(targets), steps, list(fractions), sigma, noise, seed, scores, curves,
                         per_image)

"""Comparing two explanation methods on the same images: the paired difference and its interval.

Why paired, and why one helper: two methods scored on the same images share each image's
difficulty (an easy image gets a low deletion AUC from every method), so the per-image
difference ``a_i - b_i`` varies far less than either score, and its mean resolves differences
that two unpaired standard errors hide. A percentile bootstrap of that mean (resampling images,
a fixed seed) gives the 95 % interval without assuming the differences are normal, which they
are not for bounded scores such as AUCs and correlations. Every chapter compares methods with
:func:`paired_difference`, and a sentence calls a difference real only when
:attr:`PairedDifference.resolved` (the interval excludes 0); otherwise it says how many images
would resolve it (:attr:`PairedDifference.images_to_resolve`).

A score that is NaN for an image (a correlation with a constant map, DESIGN.md) drops that
image from the comparison; how many were dropped is part of the result, never hidden.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["PairedDifference", "paired_difference", "BOOTSTRAP_RESAMPLES"]

#: Bootstrap resamples: the interval's ends move by well under 1 % of its width between seeds.
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """``mean`` of the per-image ``a - b`` over ``n`` images, with a bootstrap interval."""

    a: str  # name of the first method (or score)
    b: str  # name of the second
    n: int  # images compared (pairs where both scores are finite)
    mean: float  # mean of a_i - b_i
    low: float  # lower end of the interval
    high: float  # upper end
    confidence: float  # 0.95: a 95 % interval
    dropped: int  # images left out because a score was NaN
    seed: int  # the bootstrap's seed
    resamples: int

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0: a difference this sample size can call real."""
        return self.low > 0 or self.high < 0

    @property
    def images_to_resolve(self) -> float:
        """Roughly how many images would make the interval exclude 0, if the mean stayed where
        it is: the interval's half-width shrinks as 1/sqrt(n). ``inf`` when the mean is 0."""
        half = (self.high - self.low) / 2
        if self.mean == 0:
            return math.inf
        return max(float(self.n), math.ceil(self.n * (half / abs(self.mean)) ** 2))

    def describe(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """One line: 'a - b = +0.012 [0.004, 0.020], n = 1000 (resolved)'."""
        f = f"{{:+.{digits}f}}"
        g = f"{{:.{digits}f}}"
        text = (f"{self.a} - {self.b} = {f.format(self.mean * scale)}{unit} "
                f"[{g.format(self.low * scale)}, {g.format(self.high * scale)}]{unit}, "
                f"n = {self.n}")
        if self.dropped:
            text += f" ({self.dropped} NaN dropped)"
        if self.resolved:
            return text + ": the interval excludes 0"
        need = self.images_to_resolve
        if math.isinf(need):
            return text + ": the interval covers 0 (a mean of exactly 0: no number of images " \
                "would resolve it)"
        return text + f": the interval covers 0 (about {int(need):,} images would resolve it)"

    def to_dict(self) -> dict:
        return {**asdict(self), "resolved": self.resolved}


def paired_difference(a, b, names: tuple[str, str] = ("a", "b"), *, seed: int = 0,
                      confidence: float = 0.95,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> PairedDifference:
    """The mean per-image difference ``a - b`` and its percentile-bootstrap interval.

    ``a`` and ``b``: one score per image, in the same image order (that is the pairing).
    Pairs with a NaN in either score are dropped and counted. Resampling draws images with
    replacement from a ``numpy`` generator seeded with ``seed``, so the interval is the same
    on every run and machine.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need one value per image in both: got {a.size} and "
                         f"{b.size} values; pass the two methods' scores on the same images.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (0.95 for 95 %), got {confidence}.")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}.")
    finite = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[finite]
    if d.size == 0:
        raise ValueError("no image has a finite score from both methods; nothing to compare.")
    means = _bootstrap_means(d, resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(names[0], names[1], int(d.size), float(d.mean()), float(low),
                            float(high), confidence, int((~finite).sum()), seed, resamples)


def _bootstrap_means(d: np.ndarray, resamples: int, seed: int, chunk: int = 500) -> np.ndarray:
    """Means of ``resamples`` resamples of ``d`` (with replacement), in chunks of bounded
    memory (``chunk * len(d)`` indices at a time)."""
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        out[start:start + size] = d[rng.integers(0, d.size, (size, d.size))].mean(axis=1)
    return out

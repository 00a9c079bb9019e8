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

__all__ = ["Interval", "PairedDifference", "mean_interval", "paired_difference",
           "BOOTSTRAP_RESAMPLES"]

#: Bootstrap resamples: the interval's ends move by well under 1 % of its width between seeds.
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """The ``mean`` of one score per image over ``n`` images, with a bootstrap interval.

    The book's one interval type: a method's own mean (a sanity-check similarity, a pointing-
    game rate, a removal AUC) and the difference between two methods (:class:`PairedDifference`)
    are reported the same way, so a reader learns to read one thing.
    """

    name: str  # what was measured
    n: int  # images with a finite score
    mean: float  # mean over those images
    low: float  # lower end of the interval
    high: float  # upper end
    confidence: float = 0.95  # 0.95: a 95 % interval
    dropped: int = 0  # images left out because their score was NaN
    seed: int = 0  # the bootstrap's seed
    resamples: int = BOOTSTRAP_RESAMPLES

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or wholly below 0."""
        return self.low > 0 or self.high < 0

    def describe(self, digits: int = 3, scale: float = 1.0, unit: str = "",
                 signed: bool = False) -> str:
        """One line: 'name = 0.512 [0.480, 0.545], n = 1000' (the mean with its sign shown
        when ``signed``, as a difference has)."""
        g = f"{{:.{digits}f}}"
        m = f"{{:{'+' if signed else ''}.{digits}f}}"
        text = (f"{self.name} = {m.format(self.mean * scale)}{unit} "
                f"[{g.format(self.low * scale)}, {g.format(self.high * scale)}]{unit}, "
                f"n = {self.n}")
        return text + (f" ({self.dropped} NaN dropped)" if self.dropped else "")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference(Interval):
    """``mean`` of the per-image ``a - b`` over ``n`` images, with a bootstrap interval."""

    a: str = "a"  # name of the first method (or score)
    b: str = "b"  # name of the second

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0: a difference this sample size can call real."""
        return self.excludes_zero

    @property
    def images_to_resolve(self) -> float:
        """Roughly how many images would make the interval exclude 0, if the mean stayed where
        it is: the interval's half-width shrinks as 1/sqrt(n). ``inf`` when the mean is 0."""
        half = (self.high - self.low) / 2
        if self.mean == 0:
            return math.inf
        return max(float(self.n), math.ceil(self.n * (half / abs(self.mean)) ** 2))

    def describe(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """One line: 'a - b = +0.012 [0.004, 0.020], n = 1000: the interval excludes 0'."""
        text = super().describe(digits, scale, unit, signed=True)
        if self.resolved:
            return text + ": the interval excludes 0"
        need = self.images_to_resolve
        if math.isinf(need):
            return text + ": the interval covers 0 (a mean of exactly 0: no number of images " \
                "would resolve it)"
        return text + f": the interval covers 0 (about {int(need):,} images would resolve it)"

    def to_dict(self) -> dict:
        return {**asdict(self), "resolved": self.resolved}


def _check_options(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (0.95 for 95 %), got {confidence}.")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}.")


def _percentiles(values: np.ndarray, confidence: float, resamples: int,
                 seed: int) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of ``values`` (all finite)."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(_bootstrap_means(values, resamples, seed), [tail, 1 - tail])
    return float(low), float(high)


def mean_interval(values, name: str = "score", *, seed: int = 0, confidence: float = 0.95,
                  resamples: int = BOOTSTRAP_RESAMPLES) -> Interval:
    """The mean of one score per image and its percentile-bootstrap interval.

    NaN scores (a correlation with a constant map) are dropped and counted. When no score is
    finite the result has ``n = 0`` and a NaN mean and interval rather than an error: a report
    summarises every randomisation step, even one where no image has a defined score.
    """
    _check_options(confidence, resamples)
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(v)
    kept, dropped = v[finite], int((~finite).sum())
    if kept.size == 0:
        nan = float("nan")
        return Interval(name, 0, nan, nan, nan, confidence, dropped, seed, resamples)
    low, high = _percentiles(kept, confidence, resamples, seed)
    return Interval(name, int(kept.size), float(kept.mean()), low, high, confidence, dropped,
                    seed, resamples)


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
    _check_options(confidence, resamples)
    finite = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[finite]
    if d.size == 0:
        raise ValueError("no image has a finite score from both methods; nothing to compare.")
    low, high = _percentiles(d, confidence, resamples, seed)
    return PairedDifference(f"{names[0]} - {names[1]}", int(d.size), float(d.mean()), low, high,
                            confidence, int((~finite).sum()), seed, resamples, names[0],
                            names[1])


def _bootstrap_means(d: np.ndarray, resamples: int, seed: int, chunk: int = 500) -> np.ndarray:
    """Means of ``resamples`` resamples of ``d`` (with replacement), in chunks of bounded
    memory (``chunk * len(d)`` indices at a time)."""
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        out[start:start + size] = d[rng.integers(0, d.size, (size, d.size))].mean(axis=1)
    return out

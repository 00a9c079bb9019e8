"""s9lib.evaluate.stats: the paired difference, one method's mean, and their bootstrap interval,
on cases whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from s9lib.evaluate.stats import Interval, mean_interval, paired_difference

pytestmark = pytest.mark.unit


def test_a_constant_difference_has_a_zero_width_interval_at_that_value():
    a = np.linspace(0, 1, 50)
    d = paired_difference(a + 0.25, a, ("b+0.25", "b"))
    assert d.mean == pytest.approx(0.25) and d.low == pytest.approx(0.25)
    assert d.high == pytest.approx(0.25) and d.resolved and d.n == 50


def test_the_interval_matches_the_normal_theory_one_for_many_normal_differences():
    """For 2,000 normal differences (sd 1) the bootstrap 95 % interval of the mean is the
    textbook mean +- 1.96 sd / sqrt(n) to within a few per cent of its width."""
    rng = np.random.default_rng(1)
    d = rng.normal(0.1, 1.0, 2000)
    res = paired_difference(d, np.zeros_like(d))
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert res.low == pytest.approx(d.mean() - half, abs=0.05 * half)
    assert res.high == pytest.approx(d.mean() + half, abs=0.05 * half)


def test_pairing_resolves_what_two_unpaired_errors_cannot():
    """Each image's difficulty is shared by both methods: the unpaired standard errors
    overlap, the paired interval excludes 0."""
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0, 1, 300)
    a = difficulty + 0.02 + rng.normal(0, 0.01, 300)
    b = difficulty + rng.normal(0, 0.01, 300)
    se = math.hypot(a.std(ddof=1), b.std(ddof=1)) / math.sqrt(300)
    assert abs(a.mean() - b.mean()) < 2 * se  # unpaired: "no difference"
    res = paired_difference(a, b, ("a", "b"))
    assert res.resolved and 0.015 < res.low < res.mean < res.high < 0.025


def test_no_difference_covers_zero_and_says_how_many_images_would_resolve_it():
    rng = np.random.default_rng(3)
    d = rng.normal(0.02, 1.0, 100)
    res = paired_difference(d, np.zeros(100), ("x", "y"))
    assert not res.resolved and res.low < 0 < res.high
    assert res.images_to_resolve > 100
    assert "covers 0" in res.describe() and "x - y" in res.describe()


def test_same_seed_same_interval_and_nan_pairs_are_dropped_and_counted():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=60), rng.normal(size=60)
    a[[3, 7]] = np.nan
    first, again = paired_difference(a, b, seed=5), paired_difference(a, b, seed=5)
    assert first == again and first.n == 58 and first.dropped == 2
    assert "2 NaN dropped" in first.describe()
    assert paired_difference(a, b, seed=6) != first


@pytest.mark.parametrize("a, b, message", [
    ([1.0, 2.0], [1.0], "one value per image"),
    ([np.nan], [1.0], "no image has a finite score"),
])
def test_bad_input_is_a_clear_error(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b)


def test_one_methods_mean_gets_the_same_interval_as_its_difference_from_zero():
    """One interval type: a method's own mean and a paired difference are read the same way,
    and the mean's interval is the paired interval against a zero score."""
    rng = np.random.default_rng(7)
    v = rng.uniform(0, 1, 200)
    own, diff = mean_interval(v, "hit rate"), paired_difference(v, np.zeros_like(v))
    assert isinstance(diff, Interval)
    assert (own.mean, own.low, own.high, own.n) == pytest.approx(
        (diff.mean, diff.low, diff.high, diff.n))
    assert own.low < v.mean() < own.high and own.excludes_zero
    assert own.describe(2).startswith(f"hit rate = {v.mean():.2f} [")


def test_a_mean_drops_and_counts_nan_and_an_all_nan_score_has_no_mean():
    v = np.array([0.2, np.nan, 0.4, 0.6, np.nan])
    res = mean_interval(v, "spearman")
    assert res.n == 3 and res.dropped == 2 and res.mean == pytest.approx(0.4)
    assert "2 NaN dropped" in res.describe()
    empty = mean_interval([np.nan, np.nan])
    assert empty.n == 0 and empty.dropped == 2 and math.isnan(empty.mean)


def test_a_mean_interval_rejects_bad_options():
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="resamples"):
        mean_interval([1.0, 2.0], resamples=10)

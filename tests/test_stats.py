"""Bootstrap intervals against a direct reference computation."""

import math
import random

import pytest

from grafting.metrics.stats import bootstrap_interval, format_interval, separated


def _reference(values, level=0.95, resamples=4000, seed=1):
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(resamples))
    return means[int(resamples * (1 - level) / 2)], means[int(resamples * (1 + level) / 2) - 1]


def test_interval_matches_a_plain_python_bootstrap():
    values = [0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.9]
    mean, low, high = bootstrap_interval(values, resamples=20_000)
    ref_low, ref_high = _reference(values)
    assert mean == pytest.approx(sum(values) / len(values))
    assert low == pytest.approx(ref_low, abs=0.03) and high == pytest.approx(ref_high, abs=0.03)
    assert low < mean < high


def test_constant_and_single_samples_have_no_width_and_nans_are_dropped():
    assert bootstrap_interval([0.25, 0.25, 0.25]) == (0.25, 0.25, 0.25)
    assert bootstrap_interval([0.7]) == (0.7, 0.7, 0.7)
    assert bootstrap_interval([1.0, float("nan"), 1.0]) == (1.0, 1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_interval([]))


def test_seeded_and_separation():
    assert bootstrap_interval([0.1, 0.9, 0.4]) == bootstrap_interval([0.1, 0.9, 0.4])
    high = bootstrap_interval([0.9, 1.0, 0.95, 1.0, 0.9])
    low = bootstrap_interval([0.0, 0.1, 0.0, 0.05, 0.0])
    assert separated(high, low) and separated(low, high)
    assert not separated(high, bootstrap_interval([0.0, 1.0, 1.0, 0.0, 1.0]))
    assert format_interval((0.5, 0.25, 0.75)) == "0.500 [0.250, 0.750]"
    assert format_interval((math.nan,) * 3) == "n/a"

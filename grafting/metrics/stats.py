"""Intervals for small samples of per-seed scores: the mean with a percentile bootstrap 95% interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the sample mean and its percentile-bootstrap interval at ``level``.

    Resampling is seeded, so a table is reproducible. With one value the interval is that value;
    NaNs are dropped first (an empty sample gives NaNs).
    """
    data = torch.tensor([float(v) for v in values if not math.isnan(float(v))], dtype=torch.float64)
    if data.numel() == 0:
        return math.nan, math.nan, math.nan
    mean = data.mean().item()
    if data.numel() == 1:
        return mean, mean, mean
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, data.numel(), (resamples, data.numel()), generator=gen)
    means = data[idx].mean(dim=1)
    alpha = (1.0 - level) / 2
    low, high = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return mean, low, high


def separated(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """True when two ``(mean, low, high)`` intervals do not overlap: the claim "a differs from b" is shown."""
    return a[1] > b[2] or b[1] > a[2]


def format_interval(stats: tuple[float, float, float], digits: int = 3) -> str:
    """``0.812 [0.700, 0.920]``, or ``n/a``."""
    mean, low, high = stats
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

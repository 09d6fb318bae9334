"""Moved to :mod:`grafting.metrics.stats` (a statistic, below the methods that use it); kept for old imports."""

from grafting.metrics.stats import bootstrap_interval, format_interval, separated

__all__ = ["bootstrap_interval", "format_interval", "separated"]

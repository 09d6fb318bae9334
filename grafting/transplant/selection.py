"""Pick which ranked modules to transplant: top-K, bottom-K, random-K (control) or all (control)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

__all__ = ["SELECTORS", "register_selector", "select"]

Selector = Callable[[Sequence[str], int, "int | None"], list[str]]


def _top(ranked: Sequence[str], k: int, seed: int | None) -> list[str]:
    return list(ranked[:k])


def _bottom(ranked: Sequence[str], k: int, seed: int | None) -> list[str]:
    # Lowest score first, mirroring "top" from the other end.
    return list(reversed(ranked))[:k]


def _random(ranked: Sequence[str], k: int, seed: int | None) -> list[str]:
    if seed is None:
        raise ValueError("strategy 'random' needs a seed (0 is a valid seed)")
    # Sample from the sorted names so the draw depends on the candidate set and seed, not on the scores:
    # the same seed gives the same control modules whatever scorer ranked them.
    return random.Random(seed).sample(sorted(ranked), k)


def _all(ranked: Sequence[str], k: int, seed: int | None) -> list[str]:
    return list(ranked)


SELECTORS: dict[str, Selector] = {"top": _top, "bottom": _bottom, "random": _random, "all": _all}


def register_selector(name: str, fn: Selector) -> None:
    """Add a strategy ``fn(ranked, k, seed) -> names`` under ``name``."""
    if name in SELECTORS:
        raise ValueError(f"selector {name!r} already registered")
    SELECTORS[name] = fn


def select(
    strategy: str, ranked: Sequence[str], k: int | None = None, seed: int | None = None, strict: bool = True
) -> list[str]:
    """Choose modules to transplant from a ranking (best first).

    Args:
        strategy: a key of ``SELECTORS``: "top", "bottom", "random" or "all".
        ranked: module names, highest score first (``rank_modules`` output).
        k: how many; ignored by "all".
        seed: required by "random".
        strict: if True, ``k > len(ranked)`` is an error; otherwise ``k`` is clamped.

    Raises:
        ValueError: unknown strategy, missing/negative/too large ``k``, or duplicate names in ``ranked``.
    """
    if strategy not in SELECTORS:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose from {sorted(SELECTORS)}")
    if len(set(ranked)) != len(ranked):
        raise ValueError("ranked contains duplicate module names")
    if strategy == "all":
        return SELECTORS[strategy](ranked, len(ranked), seed)
    if k is None or k < 0:
        raise ValueError(f"strategy {strategy!r} needs k >= 0, got {k}")
    if k > len(ranked):
        if strict:
            raise ValueError(
                f"k={k} exceeds the {len(ranked)} candidate modules (pass strict=False to clamp)"
            )
        k = len(ranked)
    return SELECTORS[strategy](ranked, k, seed)

"""Selection strategies: top-K, bottom-K, seeded random-K, all."""

from __future__ import annotations

import pytest

from grafting.transplant import select

RANKED = [f"m{i:02d}" for i in range(20)]  # already best-first


def test_top_and_bottom() -> None:
    assert select("top", RANKED, 3) == ["m00", "m01", "m02"]
    assert select("bottom", RANKED, 3) == ["m19", "m18", "m17"]
    assert select("top", RANKED, 0) == []


def test_random_is_seeded_reproducible_and_order_independent() -> None:
    a = select("random", RANKED, 5, seed=0)
    assert a == select("random", RANKED, 5, seed=0)
    assert len(set(a)) == 5 and set(a) <= set(RANKED)
    assert a == select("random", list(reversed(RANKED)), 5, seed=0)  # depends on the set, not the scores
    assert any(select("random", RANKED, 5, seed=s) != a for s in range(1, 5))
    with pytest.raises(ValueError, match="seed"):
        select("random", RANKED, 5)


def test_all_and_errors() -> None:
    assert select("all", RANKED) == RANKED
    assert select("top", RANKED, 50, strict=False) == RANKED
    with pytest.raises(ValueError, match="exceeds"):
        select("top", RANKED, 50)
    with pytest.raises(ValueError, match="unknown selection"):
        select("middle", RANKED, 3)
    with pytest.raises(ValueError, match="k >= 0"):
        select("top", RANKED, None)
    with pytest.raises(ValueError, match="duplicate"):
        select("top", ["a", "a"], 1)

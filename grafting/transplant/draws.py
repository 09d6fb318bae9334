"""Single random draws of K modules: the yardstick a top-K selection is compared with.

One top-K selection is one draw of the selection rule. Comparing it with the interval of the *mean*
of 10 random draws (which varies about √10 times less than one draw) makes "top-K beats random"
too easy. Here top-K is placed among ``n`` single random draws of K modules: its percentile, and the
one-sided permutation p-value ``(1 + #{draws ≥ top-K}) / (n + 1)``, the chance that a random choice
of K modules scores at least as well. "Top-K beats random-K" means that p-value is at most 0.05,
which needs at least 19 draws; ties count against top-K.

Matched draws keep one property of the top-K set and randomise the rest: ``layer`` draws as many
modules from each layer as top-K holds there (random module kinds), ``kind`` draws as many modules of
each kind (q, k, v, o, gate, up, down, ...) as top-K holds (random layers). A top-K that beats plain
random draws but not layer-matched ones is picking layers, not modules.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["MATCHES", "matched_draws", "module_kind", "module_layer", "placement", "random_draws",
           "top_k_against_draws"]

MATCHES = ("layer", "kind")
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


def module_layer(name: str) -> int:
    """The block index in a qualified module name (``model.layers.9.mlp.down_proj`` -> 9)."""
    found = _LAYER.search(name)
    if found is None:
        raise ValueError(f"no block index in module name {name!r}")
    return int(found.group(1))


def module_kind(name: str) -> str:
    """The module's own name within its block (``model.layers.9.mlp.down_proj`` -> ``down_proj``)."""
    return name.rsplit(".", 1)[-1]


def random_draws(candidates: Sequence[str], k: int, n: int) -> list[list[str]]:
    """``n`` draws of ``k`` modules, draw ``i`` as ``select("random", candidates, k, seed=i)`` makes it.

    So the first draws are exactly the sweep's random-K controls (``control_seeds`` 0, 1, ...).
    """
    pool = sorted(candidates)
    k = min(k, len(pool))
    return [random.Random(seed).sample(pool, k) for seed in range(n)]


def matched_draws(candidates: Sequence[str], reference: Sequence[str], match: str, n: int) -> list[list[str]]:
    """``n`` random module sets with the same count per layer (``match="layer"``) or per module kind
    (``match="kind"``) as ``reference``; draw ``i`` is seeded with ``i``."""
    if match not in MATCHES:
        raise ValueError(f"match must be one of {MATCHES}, got {match!r}")
    key = module_layer if match == "layer" else module_kind
    groups: dict[Any, list[str]] = {}
    for name in sorted(candidates):
        groups.setdefault(key(name), []).append(name)
    need = sorted(Counter(key(name) for name in reference).items())
    draws = []
    for seed in range(n):
        rng = random.Random(seed)
        draws.append([m for group, count in need for m in rng.sample(groups[group], count)])
    return draws


def placement(value: float, draws: Sequence[float]) -> dict[str, float | int]:
    """Where ``value`` falls among ``draws``: counts below / equal / above, the mid-rank percentile (ties
    count half) and the one-sided p-values ``p_at_least`` (draws ≥ value) and ``p_at_most`` (draws ≤ value)."""
    n = len(draws)
    if n == 0:
        raise ValueError("no draws to place the value among")
    below = sum(d < value for d in draws)
    equal = sum(d == value for d in draws)
    above = n - below - equal
    return {"n": n, "below": below, "equal": equal, "above": above,
            "percentile": 100.0 * (below + 0.5 * equal) / n,
            "p_at_least": (1 + equal + above) / (n + 1), "p_at_most": (1 + equal + below) / (n + 1)}


def top_k_against_draws(score: Callable[[list[str]], float], ranked: Mapping[str, Sequence[str]],
                        ks: Sequence[int], n_random: int, n_matched: int = 0,
                        matches: Sequence[str] = MATCHES) -> list[dict[str, Any]]:
    """Each scorer's top-K placed among single random draws of K modules (and matched draws), per K < N.

    Args:
        score: the task score of the target with the given modules transplanted (memoised by the caller).
        ranked: scorer -> candidate modules, best first (every scorer ranks the same candidates).
        ks: the K values; K >= N is skipped (every draw is then every module).
        n_random: single random draws per K (``random_draws``, shared by the scorers).
        n_matched: layer- and kind-matched draws per scorer and K (0: none).
        matches: which matched draws (:data:`MATCHES`).

    Returns:
        One row per (K, scorer): ``top`` (its score), ``draws`` ({kind: scores}) and ``placement``
        ({kind: :func:`placement`}), kinds ``random`` and each of ``matches``.
    """
    candidates = list(next(iter(ranked.values())))
    rows = []
    for k in ks:
        if k >= len(candidates):
            continue
        plain = [score(d) for d in random_draws(candidates, k, n_random)]
        for scorer, order in ranked.items():
            top_set = list(order[:k])
            top = score(top_set)
            draws = {"random": plain}
            for match in matches if n_matched > 0 else ():
                draws[match] = [score(d) for d in matched_draws(candidates, top_set, match, n_matched)]
            rows.append({"k": k, "scorer": scorer, "top": top, "draws": draws,
                         "placement": {kind: placement(top, values) for kind, values in draws.items()}})
    return rows

"""Equal byte budgets: for each method, the largest setting whose pack fits a share of the dense bytes.

Every method is a family of module-aware policies ordered by size (a "level": a rank, a density, a
rank-and-energy combination), and :func:`fit_budget` picks the largest level whose pack's tensor
bytes are at most the budget, so the next level up would exceed it. Budgets are fractions of the
dense float32 delta's bytes (:func:`dense_bytes`); bytes are the tensor data a pack stores
(``CompressedTensor.nbytes``: codes, scales, indices, values), the same for every method. A pack's
manifest and safetensors headers come on top and are reported separately by the stages.

Norms (``none``, float32) and biases (``vector``, float32) are stored as they are by every family,
as GraftLLM does; their bytes count against each budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from grafting import names
from grafting.names import registry
from grafting.skillpack.compressors import CompressedTensor
from grafting.skillpack.policy import compress_delta

#: The budgets of the comparison, as fractions of the dense delta's bytes.
DEFAULT_BUDGETS = (0.01, 0.02, 0.03, 0.05, 0.10)
#: GraftLLM-shaped mixed precision for small ranks: a few top vectors at int8, then int4, the rest int2.
MIXED_SCHEDULE = [[4, 8], [8, 4], [None, 2]]
_RANKS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192,
          224, 256, 320, 384, 448, 512, 640, 768, 896, 1024)
_DENSITIES = tuple(round(0.0005 * 1.25**i, 6) for i in range(35) if 0.0005 * 1.25**i <= 0.9)
_KEEP = {"norm": {"method": "none"}, "vector": {"method": "dense"}, "other": {"method": "dense"}}
_MATRICES = ("embedding", "lm_head", "attention", "mlp")


def _uniform(spec: dict[str, Any]) -> dict[str, Any]:
    return {**dict.fromkeys(_MATRICES, spec), **_KEEP}


def _graftllm(rank: int, quantizer: str) -> dict[str, Any]:
    """GraftLLM's module-aware scheme at one size: magnitude on the embedding, SVD + mixed bits elsewhere
    (attention at ``rank``, lm_head at a third of it, the MLP at the energy share that grows with it)."""
    beta = min(0.99, 0.3 + 0.1 * math.log2(rank + 1))
    quant = {"method": "svd_quant", "schedule": MIXED_SCHEDULE, "quantizer": quantizer}
    return {"embedding": {"method": "magnitude", "alpha": min(0.5, 0.0005 * rank), "dtype": "float16"},
            "lm_head": {**quant, "rank": max(1, rank // 3)},
            "attention": {**quant, "rank": rank},
            "mlp": {**quant, "beta": round(beta, 4), "max_rank": 4 * rank}, **_KEEP}


#: method -> (levels, level -> policy). Levels are ordered so that bytes never decrease.
FAMILIES: dict[str, tuple[Sequence[Any], Callable[[Any], dict[str, Any]]]] = registry(names.BUDGET_FAMILIES, {
    "dense": ((None,), lambda _: _uniform({"method": "dense"})),
    "svd": (_RANKS, lambda r: _uniform({"method": "svd_rank", "rank": r, "dtype": "float16"})),
    "svd_quant": (_RANKS, lambda r: _uniform({"method": "svd_quant", "rank": r, "schedule": MIXED_SCHEDULE})),
    "graftllm": (_RANKS, lambda r: _graftllm(r, "rtn")),
    "graftllm_gptq": (_RANKS, lambda r: _graftllm(r, "gptq")),
    "magnitude": (_DENSITIES, lambda a: _uniform({"method": "magnitude", "alpha": a, "dtype": "float16"})),
    "dare": (_DENSITIES, lambda a: _uniform({"method": "dare", "p": round(1 - a, 6), "dtype": "float16"})),
    "bitdelta": ((None,), lambda _: _uniform({"method": "bitdelta"})),
})


def dense_bytes(delta: Mapping[str, Tensor]) -> int:
    """Bytes of the delta stored densely in float32: the 100% of every budget."""
    return sum(d.numel() * 4 for d in delta.values())


def pack_bytes(compressed: Mapping[str, CompressedTensor]) -> int:
    """Tensor bytes a pack stores."""
    return sum(c.nbytes for c in compressed.values())


def fit_budget(size: Callable[[int], int], n_levels: int, budget: int) -> int | None:
    """The largest level index ``i`` with ``size(i) <= budget`` (``size`` non-decreasing); None if none fits.

    Binary search: ``size`` is called about ``log2(n_levels)`` times.
    """
    lo, hi = 0, n_levels - 1
    if n_levels == 0 or size(0) > budget:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class BudgetChoice:
    """One method's pack at one budget (``compressed`` is None when even its smallest setting is too big)."""

    method: str
    budget: float  # fraction of the dense bytes
    budget_bytes: int
    level: Any
    policy: dict[str, Any] | None
    nbytes: int | None
    next_nbytes: int | None  # bytes of the next level up (None: there is none)
    compressed: dict[str, CompressedTensor] | None


def choose_for_budget(delta: Mapping[str, Tensor], method: str, budget: float,
                      hessians: Mapping[str, Tensor] | None = None,
                      memo: dict[int, dict[str, CompressedTensor]] | None = None) -> BudgetChoice:
    """The largest setting of ``method`` (a key of :data:`FAMILIES`) that fits ``budget`` of the dense bytes.

    ``memo`` (level index -> pack), passed again for the next budget of the same method, delta and
    Hessians, spares the levels the binary searches share; compression is deterministic, so the
    choice is the same.
    """
    if method not in FAMILIES:
        raise ValueError(f"unknown method {method!r}; known: {sorted(FAMILIES)}")
    levels, policy_of = FAMILIES[method]
    cap = int(budget * dense_bytes(delta))
    cache: dict[int, dict[str, CompressedTensor]] = {} if memo is None else memo

    def compressed(i: int) -> dict[str, CompressedTensor]:
        if i not in cache:
            cache[i] = compress_delta(delta, policy_of(levels[i]), hessians)
        return cache[i]

    def size(i: int) -> int:
        return pack_bytes(compressed(i))

    i = fit_budget(size, len(levels), cap)
    if i is None:
        return BudgetChoice(method, budget, cap, None, None, None, size(0), None)
    nxt = size(i + 1) if i + 1 < len(levels) else None
    return BudgetChoice(method, budget, cap, levels[i], policy_of(levels[i]), size(i), nxt, compressed(i))


def lora_rank_for_budget(budget_bytes: int, values_per_rank: int, bytes_per_value: int = 2) -> int:
    """The largest LoRA rank whose factors fit ``budget_bytes`` (0 when rank 1 does not fit)."""
    return max(0, budget_bytes // (values_per_rank * bytes_per_value))

"""Model-merging baselines over several task deltas: task arithmetic, TIES, DARE.

Each ``*_delta`` function returns the merged delta; the plain-named functions return the merged
state ``θ0 + merged delta``. A key missing from some deltas counts as zero for those tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from grafting.skillpack.compressors import Dare, keep_count
from grafting.skillpack.delta import add_delta

Delta = Mapping[str, Tensor]


def _keys(deltas: Sequence[Delta]) -> list[str]:
    if not deltas:
        raise ValueError("need at least one delta to merge")
    seen: dict[str, None] = {}
    for d in deltas:
        seen.update(dict.fromkeys(d))
    return list(seen)


def _stack(deltas: Sequence[Delta], key: str) -> Tensor:
    shapes = {tuple(d[key].shape) for d in deltas if key in d}
    if len(shapes) != 1:
        raise ValueError(f"deltas disagree on the shape of {key}: {sorted(shapes)}")
    shape = shapes.pop()
    return torch.stack([d[key].float() if key in d else torch.zeros(shape) for d in deltas])


def task_arithmetic_delta(deltas: Sequence[Delta], lam: float = 1.0) -> dict[str, Tensor]:
    """``λ Σ_t τ_t``."""
    return {k: lam * _stack(deltas, k).sum(0) for k in _keys(deltas)}


def trim_top_k(delta: Tensor, density: float) -> Tensor:
    """Keeps the ``keep_count(density, n)`` largest-magnitude entries, zeroing the rest."""
    flat = delta.float().reshape(-1)
    k = keep_count(density, flat.numel())
    out = torch.zeros_like(flat)
    if k:
        idx = torch.topk(flat.abs(), k, sorted=False).indices
        out[idx] = flat[idx]
    return out.reshape(delta.shape)


def ties_delta(deltas: Sequence[Delta], density: float = 0.2, lam: float = 1.0) -> dict[str, Tensor]:
    """TIES-merging: trim each τ to its top ``density`` fraction, elect a sign, take the disjoint mean.

    The elected sign per entry is the sign of the sum of the trimmed values (the side with more total
    mass); the merged value is the mean over the tasks whose trimmed value is non-zero with that sign.
    """
    merged = {}
    for key in _keys(deltas):
        stack = _stack(deltas, key)
        trimmed = torch.stack([trim_top_k(t, density) for t in stack])
        sign = torch.sign(trimmed.sum(0))
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        count = agree.sum(0)
        total = (trimmed * agree).sum(0)
        merged[key] = lam * torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    return merged


def dare_delta(deltas: Sequence[Delta], p: float = 0.9, seed: int = 0, lam: float = 1.0,
               rescale: bool = True) -> dict[str, Tensor]:
    """DARE then task arithmetic: each τ goes through the ``dare`` compressor (seed ``seed + t``)."""
    dropped = []
    for t, d in enumerate(deltas):
        comp = Dare(p=p, seed=seed + t, rescale=rescale)
        dropped.append({k: Dare.decompress(comp.compress(v, key=k)) for k, v in d.items()})
    return task_arithmetic_delta(dropped, lam)


def task_arithmetic(base_state: Delta, deltas: Sequence[Delta], lam: float = 1.0) -> dict[str, Tensor]:
    """``θ0 + λ Σ_t τ_t``."""
    return add_delta(base_state, task_arithmetic_delta(deltas, lam))


def ties(base_state: Delta, deltas: Sequence[Delta], density: float = 0.2, lam: float = 1.0) -> dict[str, Tensor]:
    """``θ0`` plus the TIES-merged delta."""
    return add_delta(base_state, ties_delta(deltas, density, lam))


def dare(base_state: Delta, deltas: Sequence[Delta], p: float = 0.9, seed: int = 0, lam: float = 1.0,
         rescale: bool = True) -> dict[str, Tensor]:
    """``θ0`` plus the DARE-then-task-arithmetic delta."""
    return add_delta(base_state, dare_delta(deltas, p, seed, lam, rescale))


#: Name -> function returning the merged *delta*; configs pick a merger by name.
MERGERS: dict[str, Callable[..., dict[str, Tensor]]] = {
    "task_arithmetic": task_arithmetic_delta,
    "ties": ties_delta,
    "dare": dare_delta,
}

"""Model-merging baselines over several task deltas: task arithmetic, TIES, DARE; and EMR-merging.

Each ``*_delta`` function returns the merged delta; the plain-named functions return the merged
state ``θ0 + merged delta``. A key missing from some deltas counts as zero for those tasks.

Task arithmetic and TIES are computed per tensor by ``peft.utils.merge_utils`` (the maintained
implementation; one weight λ per task). DARE is ours: peft's ``dare_linear`` draws its masks from
the global RNG, while ours draws them exactly as the ``dare`` compressor does (a generator seeded
per task and parameter name), so a merge is reproducible and equals merging DARE packs.
The merge weight λ, the TIES density and the DARE drop rate are hyper-parameters: the SkillPack
stage picks them on the tasks' validation split (:func:`grid`).

EMR-merging (:func:`emr_task_deltas`) has no hyper-parameter, and is not a single merged model: one unified
delta is shared, and each task keeps a 1-bit mask and a scale, applied by task id (an oracle router).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from peft.utils import merge_utils
from torch import Tensor

from grafting import names
from grafting.names import registry
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


def _weights(n: int, lam: float) -> Tensor:
    return torch.full((n,), float(lam))


def task_arithmetic_delta(deltas: Sequence[Delta], lam: float = 1.0) -> dict[str, Tensor]:
    """``λ Σ_t τ_t`` (``peft.utils.merge_utils.task_arithmetic``)."""
    return {k: merge_utils.task_arithmetic(list(_stack(deltas, k)), _weights(len(deltas), lam))
            for k in _keys(deltas)}


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
    """TIES-merging (``peft.utils.merge_utils.ties``): trim each τ to its top ``density`` fraction by
    magnitude, elect the sign of the summed trimmed values, average the agreeing entries, times λ."""
    merged = {}
    for key in _keys(deltas):
        with warnings.catch_warnings():  # density 1 keeps everything; peft warns about it
            warnings.simplefilter("ignore", UserWarning)
            merged[key] = merge_utils.ties(list(_stack(deltas, key)), _weights(len(deltas), lam), density,
                                           majority_sign_method="total")
    return merged


def dare_delta(deltas: Sequence[Delta], p: float = 0.9, seed: int = 0, lam: float = 1.0,
               rescale: bool = True) -> dict[str, Tensor]:
    """DARE then task arithmetic: each τ goes through the ``dare`` compressor (seed ``seed + t``)."""
    dropped = []
    for t, d in enumerate(deltas):
        comp = Dare(p=p, seed=seed + t, rescale=rescale)
        dropped.append({k: Dare.decompress(comp.compress(v, key=k)) for k, v in d.items()})
    return task_arithmetic_delta(dropped, lam)


def emr_task_deltas(deltas: Sequence[Delta]) -> list[dict[str, Tensor]]:
    """EMR-merging (Huang et al., NeurIPS 2024): each task's delta rebuilt from one shared delta.

    Per entry, the unified delta takes the sign of ``Σ_t τ_t`` and the largest ``|τ_t|`` among the tasks
    of that sign. Task ``t`` keeps the mask ``M_t = (τ_t · τ_uni > 0)`` (1 bit per entry) and the scale
    ``λ_t = Σ|τ_t| / Σ|M_t ⊙ τ_uni|`` over every parameter, so its delta ``λ_t M_t ⊙ τ_uni`` has the
    magnitude of ``τ_t``. Returns the ``T`` rebuilt deltas, in order (a key missing from a delta is zero).
    """
    unified, masks = {}, []
    for key in _keys(deltas):
        stacked = _stack(deltas, key)
        sign = torch.sign(stacked.sum(0))
        agreeing = stacked * sign > 0
        unified[key] = sign * (stacked.abs() * agreeing).amax(0)
        masks.append(stacked * unified[key] > 0)
    rebuilt = []
    for t, delta in enumerate(deltas):
        kept = {key: unified[key] * mask[t] for key, mask in zip(unified, masks, strict=True)}
        own = sum(float(v.float().abs().sum()) for v in delta.values())
        shared = sum(float(v.abs().sum()) for v in kept.values())
        scale = own / shared if shared > 0 else 0.0
        rebuilt.append({key: (v * scale).to(_dtype(deltas, key)) for key, v in kept.items()})
    return rebuilt


def _dtype(deltas: Sequence[Delta], key: str) -> torch.dtype:
    return next(d[key].dtype for d in deltas if key in d)


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


def grid(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of a merger's settings: a list value is a set of candidates, a scalar is fixed.

    ``{"lam": [0.5, 1.0], "density": 0.2}`` -> ``[{"lam": 0.5, "density": 0.2}, {"lam": 1.0, "density": 0.2}]``.
    """
    keys = list(params)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in params.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


#: Name -> function returning the merged *delta*; configs pick a merger by name.
MERGERS: dict[str, Callable[..., dict[str, Tensor]]] = registry(names.MERGERS, {
    "task_arithmetic": task_arithmetic_delta,
    "ties": ties_delta,
    "dare": dare_delta,
})

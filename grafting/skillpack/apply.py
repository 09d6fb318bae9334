"""Apply SkillPacks to a model in place, and undo them bit-exactly.

``apply_packs_`` keeps a copy of every tensor it touches; ``unload_`` copies those back rather than
subtracting the delta, because ``(w + d) - d`` is not ``w`` in floating point. With ``offload=True``
the copies live in CPU memory, so applying a pack to a model on a GPU costs no second copy there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from grafting.skillpack.compressors import CompressedTensor, decompress
from grafting.skillpack.pack import SkillPack, check_fingerprint, model_fingerprint

PackLike = SkillPack | Mapping[str, CompressedTensor]
#: What ``apply_packs_`` returns and ``unload_`` needs: parameter name -> original tensor (a copy).
Saved = dict[str, Tensor]


def _targets(model: torch.nn.Module) -> dict[str, Tensor]:
    # remove_duplicate=False so every alias of a tied weight can be addressed by name
    named = dict(model.named_parameters(remove_duplicate=False))
    named.update(dict(model.named_buffers(remove_duplicate=False)))
    return named


def _as_list(packs: PackLike | Sequence[PackLike]) -> list[PackLike]:
    if isinstance(packs, (SkillPack, Mapping)):
        return [packs]
    return list(packs)


def _modules(pack: PackLike) -> Mapping[str, CompressedTensor]:
    return pack.modules if isinstance(pack, SkillPack) else pack


def _plan(model: torch.nn.Module, packs: list[PackLike], strict: bool) -> dict[str, list[tuple[int, str]]]:
    """Target name -> [(pack index, module name)], one entry per pack per distinct tensor.

    Tied aliases (two names, one tensor) are grouped under the first name, and a pack holding both
    aliases contributes once.
    """
    targets = _targets(model)
    first_name: dict[int, str] = {}
    plan: dict[str, list[tuple[int, str]]] = {}
    for i, pack in enumerate(packs):
        done: set[int] = set()
        for name, c in _modules(pack).items():
            if name not in targets:
                if strict:
                    raise KeyError(f"pack {i} has a delta for {name!r}, which the model does not have")
                continue
            t = targets[name]
            if tuple(t.shape) != tuple(c.meta["shape"]):
                raise ValueError(f"pack {i}: delta for {name} has shape {tuple(c.meta['shape'])}, "
                                 f"the model's tensor is {tuple(t.shape)}")
            key = id(t)
            if key in done:
                continue
            done.add(key)
            owner = first_name.setdefault(key, name)
            plan.setdefault(owner, []).append((i, name))
    return plan


def apply_packs_(
    model: torch.nn.Module,
    packs: PackLike | Sequence[PackLike],
    weights: Sequence[float] | None = None,
    *,
    check_fingerprints: bool = True,
    strict: bool = True,
    fingerprint: str | None = None,
    offload: bool = False,
) -> Saved:
    """Adds ``Σ_i weights[i] * decompress(packs[i])`` to the model's tensors, in place.

    The sum is formed in float32 (float64 for float64 tensors) and cast to each tensor's dtype once.
    Everything is validated before any tensor changes; if applying fails midway, the model is restored.

    Args:
        model: the base model the packs were built from.
        packs: one pack or several (``SkillPack`` or name -> CompressedTensor).
        weights: one scale per pack (default 1.0 each).
        check_fingerprints: compare each SkillPack's base fingerprint with the model's.
        strict: a delta for a name the model lacks is an error (else it is skipped).
        fingerprint: the model's :func:`model_fingerprint`, if already known; saves hashing every
            weight on each call (e.g. when a router applies packs per prompt).
        offload: keep the saved originals on the CPU instead of the tensors' own device.

    Returns:
        The saved originals to pass to :func:`unload_`.
    """
    packs = _as_list(packs)
    weights = [1.0] * len(packs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(packs):
        raise ValueError(f"got {len(weights)} weights for {len(packs)} packs")
    if check_fingerprints and any(isinstance(p, SkillPack) and p.base_fingerprint for p in packs):
        here = fingerprint or model_fingerprint(model)
        for i, p in enumerate(packs):
            if isinstance(p, SkillPack):
                check_fingerprint(p.base_fingerprint, here, where=f"pack {i} ({p.path or 'in memory'})")
    plan = _plan(model, packs, strict)
    targets = _targets(model)
    saved: Saved = {}
    try:
        with torch.no_grad():
            for name, contributions in plan.items():
                t = targets[name]
                work = torch.promote_types(t.dtype, torch.float32)
                total = torch.zeros(t.shape, dtype=work)
                for i, module in contributions:
                    total += weights[i] * decompress(_modules(packs[i])[module]).to(work)
                saved[name] = t.detach().to("cpu", copy=True) if offload else t.detach().clone()
                t.copy_((t.detach().to(work) + total.to(t.device)).to(t.dtype))
    except BaseException:
        unload_(model, saved)
        raise
    return saved


def unload_(model: torch.nn.Module, saved: Saved) -> None:
    """Restores the tensors saved by :func:`apply_packs_`, bit for bit."""
    targets = _targets(model)
    with torch.no_grad():
        for name, original in saved.items():
            t = targets[name]
            if t.shape != original.shape or t.dtype != original.dtype:
                raise ValueError(f"cannot restore {name}: model tensor is {tuple(t.shape)} {t.dtype}, "
                                 f"saved copy is {tuple(original.shape)} {original.dtype}")
            t.copy_(original)


@contextmanager
def applied(
    model: torch.nn.Module,
    packs: PackLike | Sequence[PackLike],
    weights: Sequence[float] | None = None,
    **kwargs,
) -> Iterator[torch.nn.Module]:
    """Context manager: the model with the packs applied inside, restored exactly in ``finally``."""
    saved = apply_packs_(model, packs, weights, **kwargs)
    try:
        yield model
    finally:
        unload_(model, saved)


def fuse_sum(packs: PackLike | Sequence[PackLike], weights: Sequence[float] | None = None) -> dict[str, Tensor]:
    """Task arithmetic over packs: name -> ``Σ_i weights[i] * decompress(packs[i])`` (float32, dense).

    Names are taken literally; tied aliases are not merged here (``apply_packs_`` does that).
    """
    packs = _as_list(packs)
    weights = [1.0] * len(packs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(packs):
        raise ValueError(f"got {len(weights)} weights for {len(packs)} packs")
    fused: dict[str, Tensor] = {}
    for w, pack in zip(weights, packs, strict=True):
        for name, c in _modules(pack).items():
            d = w * decompress(c)
            fused[name] = fused[name] + d if name in fused else d
    return fused

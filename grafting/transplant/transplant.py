"""Copy (or blend) selected linear modules from a source model into a target model, reversibly."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from grafting.transplant.candidates import check_compatible

__all__ = ["Saved", "restore_", "transplant_", "transplanted"]

# name -> {"weight": tensor, "bias": tensor (when the module has one)}: the target's original values.
Saved = dict[str, dict[str, torch.Tensor]]


def _params(mod: nn.Module) -> dict[str, torch.Tensor]:
    out = {"weight": mod.weight}
    if getattr(mod, "bias", None) is not None:
        out["bias"] = mod.bias
    return out


def transplant_(target: nn.Module, source: nn.Module, names: Sequence[str], alpha: float = 1.0) -> Saved:
    """Overwrite the target's ``names`` modules with the source's weights and biases, in place.

    ``alpha < 1`` blends instead: theta = (1 - alpha) * theta_target + alpha * theta_source (computed in at
    least float32, then cast to the target's dtype). ``alpha == 1`` is an exact copy.

    Args:
        target: model to modify.
        source: model to read from (may live on another device or dtype).
        names: qualified module names; must be linear modules with equal shapes in both models.
        alpha: transplant strength in [0, 1].

    Returns:
        The target's original tensors, for :func:`restore_`.

    Raises:
        ValueError: bad ``alpha``, duplicate names, or names missing / mismatched (all listed) —
            raised before anything is modified.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    names = list(names)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate module names: {', '.join(dupes)}")
    check_compatible(source, target, names)
    src_mods, tgt_mods = dict(source.named_modules()), dict(target.named_modules())

    saved: Saved = {n: {k: p.detach().clone() for k, p in _params(tgt_mods[n]).items()} for n in names}
    with torch.no_grad():
        for n in names:
            src_p = _params(src_mods[n])
            for k, p in _params(tgt_mods[n]).items():
                s = src_p[k].detach().to(p.device)
                if alpha == 1.0:
                    p.copy_(s)  # copy_ casts dtype; values are bit-identical when dtypes agree
                else:
                    dt = torch.promote_types(p.dtype, torch.float32)
                    p.copy_((1.0 - alpha) * p.to(dt) + alpha * s.to(dt))
    return saved


def restore_(target: nn.Module, saved: Saved) -> None:
    """Write back the tensors returned by :func:`transplant_`, bit-exactly."""
    mods = dict(target.named_modules())
    missing = [n for n in saved if n not in mods]
    if missing:
        raise ValueError(f"cannot restore, modules not in target: {', '.join(missing)}")
    with torch.no_grad():
        for n, tensors in saved.items():
            params = _params(mods[n])
            for k, t in tensors.items():
                params[k].copy_(t)


@contextmanager
def transplanted(
    target: nn.Module, source: nn.Module, names: Sequence[str], alpha: float = 1.0
) -> Iterator[Saved]:
    """Context manager: transplant on entry, restore the target in ``finally``.

    Yields:
        The saved original tensors.
    """
    saved = transplant_(target, source, names, alpha)
    try:
        yield saved
    finally:
        restore_(target, saved)

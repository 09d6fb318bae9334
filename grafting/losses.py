"""Alignment losses, chosen by name (``loss.distance``); a new one is one function plus one registry line.

Residual distances compare two residual streams ``(batch, seq, d)`` position by position; the
paper's "KL between the two streams" does not say how a vector becomes a distribution, so ``kl``
takes a softmax over the hidden dimension. ``mse`` is the default (known to work at tiny scale).
Every distance averages over the non-pad positions given by ``mask``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _masked_mean(per_position: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return per_position.mean()
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp_min(1.0)


def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return _masked_mean((pred.float() - target.float()).pow(2).mean(-1), mask)


def cosine(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return _masked_mean(1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1), mask)


def kl(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
       temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(target) || softmax(pred)) over the last dimension (hidden units or vocabulary)."""
    log_p = F.log_softmax(target.float() / temperature, dim=-1)
    log_q = F.log_softmax(pred.float() / temperature, dim=-1)
    return _masked_mean((log_p.exp() * (log_p - log_q)).sum(-1), mask)


DISTANCES: dict[str, Callable[..., torch.Tensor]] = {"mse": mse, "cosine": cosine, "kl": kl}
KINDS = ("residual", "logits")


def get_distance(name: str) -> Callable[..., torch.Tensor]:
    if name not in DISTANCES:
        from grafting.errors import ConfigError

        raise ConfigError("loss.distance", f"unknown distance {name!r}; allowed: {sorted(DISTANCES)}.")
    return DISTANCES[name]

"""Translators: identity-initialised maps between one model's residual basis and another's.

Two parametrisations (``graft.translator``):

- ``linear``: ``W h + b`` with ``W`` the identity (truncated or zero-padded when the widths differ)
  and ``b = 0``, as in the grafting paper.
- ``affine``: tuned-lens style ``P h + A h + b`` with ``P`` the fixed (rectangular) identity and
  ``A``, ``b`` zero at the start. Same function at init; weight decay pulls it back to identity.
"""

from __future__ import annotations

import torch
from torch import nn


def rectangular_identity(d_out: int, d_in: int) -> torch.Tensor:
    """The ``d_out x d_in`` identity: truncated when narrowing, zero-padded when widening."""
    eye = torch.zeros(d_out, d_in)
    n = min(d_out, d_in)
    eye[range(n), range(n)] = 1.0
    return eye


class LinearTranslator(nn.Linear):
    """A linear map initialised to the (rectangular) identity."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__(d_in, d_out, bias=True)
        with torch.no_grad():
            self.weight.copy_(rectangular_identity(d_out, d_in))
            self.bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(h, self.weight.to(h.dtype), self.bias.to(h.dtype))

    @torch.no_grad()
    def set_map_(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Make this translator compute ``weight h + bias`` (e.g. a least-squares solution)."""
        self.weight.copy_(weight)
        self.bias.copy_(bias)


class AffineTranslator(nn.Module):
    """``P h + A h + b`` with a fixed identity ``P`` and ``A, b`` starting at zero (tuned-lens style)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.register_buffer("identity", rectangular_identity(d_out, d_in))
        self.delta = nn.Linear(d_in, d_out, bias=True)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)
        self.in_features, self.out_features = d_in, d_out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        base = nn.functional.linear(h, self.identity.to(h.dtype))
        return base + nn.functional.linear(h, self.delta.weight.to(h.dtype), self.delta.bias.to(h.dtype))

    @torch.no_grad()
    def set_map_(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Make this translator compute ``weight h + bias``: ``A = weight - P``."""
        self.delta.weight.copy_(weight - self.identity)
        self.delta.bias.copy_(bias)


def least_squares_map(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` minimising ``sum ||W x_n + b - y_n||^2`` over the rows of ``x (N, d_in)``, ``y (N, d_out)``.

    The closed-form optimum of a linear translator under MSE (solved in float64 for accuracy).
    """
    ones = torch.ones(x.shape[0], 1, dtype=torch.float64, device=x.device)
    design = torch.cat([x.double(), ones], dim=1)
    solution = torch.linalg.lstsq(design.cpu(), y.double().cpu(), driver="gelsd").solution  # (d_in + 1, d_out)
    return solution[:-1].T.float(), solution[-1].float()


TRANSLATORS: dict[str, type[nn.Module]] = {"linear": LinearTranslator, "affine": AffineTranslator}


def build_translator(kind: str, d_in: int, d_out: int) -> nn.Module:
    """The translator registered as ``kind`` (a new kind is one class plus one line here)."""
    if kind not in TRANSLATORS:
        from grafting.errors import ConfigError

        raise ConfigError("graft.translator", f"unknown translator {kind!r}; allowed: {sorted(TRANSLATORS)}.")
    return TRANSLATORS[kind](d_in, d_out)

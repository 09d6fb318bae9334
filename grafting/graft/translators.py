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

from grafting import names
from grafting.names import registry


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


def procrustes_map(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` with ``W = s Q``, ``Q`` (semi-)orthogonal, minimising ``sum ||W x_n + b - y_n||^2``.

    Orthogonal Procrustes with a scale and a shift: centre both sides, take the SVD
    ``Y_c^T X_c = U S V^T``; then ``Q = U V^T`` (for rectangular maps, orthonormal columns or rows on
    the shared ``min(d_in, d_out)``-dimensional subspace), ``s = tr(S) / ||X_c Q^T||^2`` and
    ``b = mean(y) - W mean(x)``. Unlike least squares it cannot shrink or shear directions that are rare
    in the fitting data: a rotation keeps every direction's length, the task's included.
    """
    x, y = x.double().cpu(), y.double().cpu()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    u, sv, vh = torch.linalg.svd(yc.T @ xc, full_matrices=False)  # (d_out, r), (r,), (r, d_in)
    q = u @ vh
    scale = sv.sum() / (xc @ q.T).pow(2).sum().clamp_min(1e-30)  # the MSE-optimal scale for this Q
    weight = scale * q
    return weight.float(), (my - weight @ mx).float()


CLOSED_FORMS = {"lstsq": least_squares_map, "procrustes": procrustes_map}

TRANSLATORS: dict[str, type[nn.Module]] = registry(names.TRANSLATORS,
                                                   {"linear": LinearTranslator, "affine": AffineTranslator})


def build_translator(kind: str, d_in: int, d_out: int) -> nn.Module:
    """The translator registered as ``kind`` (a new kind is one class plus one line here)."""
    if kind not in TRANSLATORS:
        from grafting.errors import ConfigError

        raise ConfigError("graft.translator", f"unknown translator {kind!r}; allowed: {sorted(TRANSLATORS)}.")
    return TRANSLATORS[kind](d_in, d_out)

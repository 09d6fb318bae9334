"""GPTQ for SVD factors (Delta-CoMe / GraftLLM): mixed-precision quantisation with error feedback.

GPTQ (Frantar et al., 2022) quantises a weight ``W`` (rows × cols, ``y = W x``) one input column at
a time and spreads each column's rounding error over the columns not yet quantised, so that the
output error ``||(W − Q) X||`` on calibration inputs ``X`` stays small. With ``H = X Xᵀ`` (plus
damping ``damp · mean(diag H)``) and ``U`` the upper Cholesky factor of ``H⁻¹``, quantising column
``j`` to ``q`` updates ``W[:, j+1:] −= ((W[:, j] − q) / U[j, j]) · U[j, j+1:]``; this equals the
optimal-brain-surgeon update with the inverse of the not-yet-quantised block of ``H``, recomputed
each step (the reference in ``tests/test_skillpack_gptq.py``).

For a delta ``Δ ≈ A B`` (``A = U√σ``: m × r, ``B = √σ Vᵀ``: r × n), as Delta-CoMe does:
- ``B`` is quantised with the layer's input Hessian ``H``; its rows are singular vectors, each with
  its own bit width (``schedule``), groups of ``group_size`` columns per row.
- ``A`` is quantised with the Hessian of its own input ``B_q x``, i.e. ``B_q H B_qᵀ``; its GPTQ
  columns are singular vectors, each quantised at its bit width in groups along its m entries.

The codes, scales and zeros have exactly the layout of :func:`grafting.skillpack.quant.quantize_factors`
(round-to-nearest), so both decompress with :func:`~grafting.skillpack.quant.dequantize_factors`. With
``H = I`` and no damping there is no feedback and GPTQ gives RTN's codes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from grafting.skillpack.quant import (
    FP16_BITS,
    Quantized,
    _grid,
    group_width,
    pack_bits,
    parse_schedule,
    resolve_dtype,
)

#: ``quantize_column(j, w)``: the dequantised column ``j``, given the current (error-updated) ``w``.
ColumnQuantizer = Callable[[int, Tensor], Tensor]


def gptq(w: Tensor, hessian: Tensor, quantize_column: ColumnQuantizer, damp: float = 0.01) -> Tensor:
    """Runs GPTQ's column loop in float64 and returns the dequantised matrix.

    Args:
        w: (rows, cols) weight; column ``j`` multiplies input feature ``j``.
        hessian: (cols, cols) second moment of the inputs, ``Σ x xᵀ`` (any positive scale).
        quantize_column: rounds one column onto its grid (it may read later columns of ``w`` to set
            the grid of a group when the group starts, as GPTQ does).
        damp: added to the diagonal as a fraction of its mean (GPTQ's ``percdamp``).
    """
    rows, cols = w.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"hessian must be {cols}x{cols} for a weight with {cols} columns, got {tuple(hessian.shape)}")
    w = w.detach().double().clone()
    h = hessian.detach().double().clone()
    dead = h.diagonal() == 0  # inputs that are always zero: their weights never matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * float(h.diagonal().mean()))
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for j in range(cols):
        q[:, j] = quantize_column(j, w).double()
        err = (w[:, j] - q[:, j]) / upper[j, j]
        w[:, j + 1 :] -= err.unsqueeze(1) * upper[j, j + 1 :].unsqueeze(0)
    return q


class _Grids:
    """Codes, scales and zeros of ``r`` singular vectors of ``width`` entries, each at its own bit width."""

    def __init__(self, bits: Sequence[int], width: int, group_size: int | None, param_dtype: str) -> None:
        self.bits = torch.tensor([int(b) for b in bits])
        self.g = group_width(width, group_size)
        n_groups = -(-width // self.g) if width else 0
        self.dtype = resolve_dtype(param_dtype)
        self.levels = torch.where(self.bits == FP16_BITS, 1, (1 << self.bits.clamp(max=8)) - 1).float()
        self.codes = torch.zeros(len(bits), width, dtype=torch.uint8)
        self.scale = torch.zeros(len(bits), n_groups, dtype=self.dtype)
        self.zero = torch.zeros(len(bits), n_groups, dtype=self.dtype)
        self.fp16 = torch.zeros(len(bits), width, dtype=torch.float16)

    def grid(self, lo: Tensor, hi: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
        return _grid(lo.float(), hi.float(), levels, self.dtype)

    @staticmethod
    def round(x: Tensor, scale: Tensor, zero: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
        """RTN onto a grid, exactly as :func:`grafting.skillpack.quant.quantize` does: (codes, values)."""
        s = scale.float()
        safe = torch.where(s > 0, s, torch.ones_like(s))
        codes = torch.round((x.float() - zero.float()) / safe).clamp_(min=0)
        codes = torch.minimum(codes, levels)
        codes = torch.where(s > 0, codes, torch.zeros_like(codes))
        return codes, codes * s + zero.float()

    def segments(self, prefix: str, segments: Sequence[tuple[int, int, int]]) -> dict[str, Tensor]:
        """The tensors of :func:`~grafting.skillpack.quant.quantize_factors`, one set per segment."""
        out: dict[str, Tensor] = {}
        for i, (start, end, bits) in enumerate(segments):
            if bits == FP16_BITS:
                out[f"{prefix}{i}.values"] = self.fp16[start:end].contiguous()
                continue
            q = Quantized(pack_bits(self.codes[start:end], bits), self.scale[start:end].contiguous(),
                          self.zero[start:end].contiguous(), bits, self.g, (end - start, self.codes.shape[1]))
            out.update(q.tensors(f"{prefix}{i}"))
        return out


def _rows_quantizer(grids: _Grids) -> ColumnQuantizer:
    """For ``B`` (vectors × inputs): row ``i`` at ``bits[i]``; each group's grid set when GPTQ reaches it."""
    fp16 = grids.bits == FP16_BITS
    state: dict[str, Tensor] = {}

    def quantize_column(j: int, w: Tensor) -> Tensor:
        k = j // grids.g
        if j % grids.g == 0:
            block = w[:, j : j + grids.g].float()
            grids.scale[:, k], grids.zero[:, k] = grids.grid(block.amin(1), block.amax(1), grids.levels)
            state["scale"], state["zero"] = grids.scale[:, k], grids.zero[:, k]
        codes, values = grids.round(w[:, j], state["scale"], state["zero"], grids.levels)
        grids.codes[:, j] = codes.to(torch.uint8)
        grids.fp16[:, j] = w[:, j].to(torch.float16)
        return torch.where(fp16, grids.fp16[:, j].float(), values)

    return quantize_column


def _columns_quantizer(grids: _Grids) -> ColumnQuantizer:
    """For ``A`` (outputs × vectors): column ``j`` at ``bits[j]``, in groups along its entries."""

    def quantize_column(j: int, w: Tensor) -> Tensor:
        col = w[:, j].float()
        if int(grids.bits[j]) == FP16_BITS:
            grids.fp16[j] = col.to(torch.float16)
            return grids.fp16[j].float()
        m, g = col.numel(), grids.g
        n_groups = grids.scale.shape[1]
        pad = n_groups * g - m
        # padding repeats the last entry, which leaves each group's min and max unchanged (as RTN)
        padded = torch.cat([col, col[-1:].expand(pad)]) if pad else col
        groups = padded.reshape(n_groups, g)
        levels = grids.levels[j].expand(n_groups)
        scale, zero = grids.grid(groups.amin(1), groups.amax(1), levels)
        grids.scale[j], grids.zero[j] = scale, zero
        codes, values = grids.round(groups, scale.unsqueeze(1), zero.unsqueeze(1), levels.unsqueeze(1))
        grids.codes[j] = codes.reshape(-1)[:m].to(torch.uint8)
        return values.reshape(-1)[:m]

    return quantize_column


def gptq_factors(
    u: Tensor, s: Tensor, vh: Tensor, hessian: Tensor,
    schedule: Sequence[Sequence[int | str | None]],
    group_size: int | None, param_dtype: str = "float16", damp: float = 0.01,
) -> tuple[dict[str, Tensor], list[list[int]]]:
    """GPTQ counterpart of :func:`grafting.skillpack.quant.quantize_factors` (same outputs, same layout).

    Args:
        u, s, vh: truncated SVD of the (out × in) delta, σ descending.
        hessian: (in × in) second moment of the layer's inputs on calibration data.
        schedule, group_size, param_dtype: as for round-to-nearest.
        damp: Hessian damping, as a fraction of its mean diagonal (GraftLLM's public code: 0.01).
    """
    rank = s.numel()
    segments = parse_schedule(schedule, rank)
    bits = [b for start, end, b in segments for _ in range(start, end)]
    root = s.float().clamp_min(0).sqrt()
    a = u.float() * root  # (m, r)
    b = vh.float() * root.unsqueeze(1)  # (r, n)
    b_grids = _Grids(bits, b.shape[1], group_size, param_dtype)
    b_q = gptq(b, hessian, _rows_quantizer(b_grids), damp)
    a_grids = _Grids(bits, a.shape[0], group_size, param_dtype)
    gptq(a, b_q @ hessian.double() @ b_q.t(), _columns_quantizer(a_grids), damp)
    tensors = {**a_grids.segments("u", segments), **b_grids.segments("v", segments)}
    return tensors, [list(seg) for seg in segments]

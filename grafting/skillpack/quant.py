"""Round-to-nearest (RTN) group quantisation with real bit packing.

This is plain RTN, *not* GPTQ. GraftLLM's public code quantises singular vectors with GPTQ
(group size 128, damping 0.01) on calibration data; RTN needs no data and is the documented first
baseline (docs/METHODS.md §2).

Scheme: asymmetric min/max per group of ``group_size`` consecutive entries along the last
dimension. A group with minimum ``lo`` and maximum ``hi`` gets an offset ``zero <= lo`` and a step
``scale`` with ``zero + (2^b - 1) * scale >= hi``, both stored in ``param_dtype`` (float16 by
default) and rounded *outwards*, so the grid always covers the group and the reconstruction error
of every entry is at most ``scale / 2``. Codes are packed LSB-first into a uint8 bitstream, so
``n`` codes of ``b`` bits take exactly ``ceil(n * b / 8)`` bytes on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from grafting import names

SUPPORTED_BITS = names.SUPPORTED_BITS
#: Bit width meaning "keep these singular vectors unquantised, in float16" (the public code's fp16 columns).
FP16_BITS = names.FP16_BITS
DEFAULT_GROUP_SIZE = 128
#: GraftLLM's public setting: 20 vectors at int8, 180 at int4, the rest at int2. ``None`` = "the rest".
DEFAULT_SCHEDULE: tuple[tuple[int | None, int], ...] = ((20, 8), (180, 4), (None, 2))

_DTYPES = {name: getattr(torch, name) for name in names.PACK_DTYPES}


def resolve_dtype(name: str) -> torch.dtype:
    """Maps a config string ("float16", "bfloat16", "float32") to a torch dtype."""
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


# ----------------------------------------------------------------------------------------- bit packing


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Packs unsigned integer codes into a uint8 bitstream, LSB first.

    Args:
        codes: integer tensor of any shape with values in ``[0, 2**bits)``; it is flattened.
        bits: bits per code, 1..8.

    Returns:
        1-D uint8 tensor of ``ceil(codes.numel() * bits / 8)`` bytes.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    flat = codes.reshape(-1)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"codes out of range for {bits}-bit packing")
    flat = flat.to(torch.uint8)
    if bits == 8:
        return flat.clone()
    shifts = torch.arange(bits, dtype=torch.uint8)
    stream = ((flat.unsqueeze(1) >> shifts) & 1).reshape(-1)  # bit j of code i at position i*bits+j
    pad = (-stream.numel()) % 8
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad)])
    weights = torch.arange(8, dtype=torch.uint8)
    return (stream.view(-1, 8) << weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of :func:`pack_bits`: returns the first ``n`` codes as a 1-D uint8 tensor."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    expected = (n * bits + 7) // 8
    if packed.dtype != torch.uint8 or packed.numel() != expected:
        raise ValueError(f"packed stream has {packed.numel()} bytes ({packed.dtype}); expected {expected} uint8")
    if bits == 8:
        return packed.reshape(-1).clone()
    stream = ((packed.reshape(-1).unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(-1)
    stream = stream[: n * bits].view(n, bits)
    return (stream << torch.arange(bits, dtype=torch.uint8)).sum(dim=1, dtype=torch.uint8)


# ------------------------------------------------------------------------------------ group quantisation


@dataclass
class Quantized:
    """A 2-D tensor quantised per group along its last dimension."""

    codes: Tensor  # packed uint8 bitstream of rows*cols codes
    scale: Tensor  # (rows, n_groups), param dtype
    zero: Tensor  # (rows, n_groups), param dtype; the value of code 0
    bits: int
    group_size: int
    shape: tuple[int, int]

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        """The tensors to save, named ``{prefix}.codes`` etc."""
        return {f"{prefix}.codes": self.codes, f"{prefix}.scale": self.scale, f"{prefix}.zero": self.zero}

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, Tensor], prefix: str, bits: int, group_size: int, shape: Sequence[int]
    ) -> Quantized:
        """Rebuilds from saved tensors (see :meth:`tensors`)."""
        return cls(
            tensors[f"{prefix}.codes"], tensors[f"{prefix}.scale"], tensors[f"{prefix}.zero"],
            bits, group_size, (int(shape[0]), int(shape[1])),
        )


def group_width(cols: int, group_size: int | None) -> int:
    """Effective group size: ``group_size``, or the whole row when it is ``None``/0."""
    return max(int(group_size) if group_size else cols, 1)


def _grid(lo: Tensor, hi: Tensor, levels: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Offset and step in ``dtype``, rounded outwards so the grid covers ``[lo, hi]``."""
    zero = lo.to(dtype)
    down = zero.float() > lo
    zero = torch.where(down, torch.nextafter(zero, torch.full_like(zero, -float("inf"))), zero)
    scale = ((hi - zero.float()) / levels).to(dtype)
    for _ in range(4):  # one step up almost always suffices; fp32 products can need a second
        short = zero.float() + scale.float() * levels < hi
        if not bool(short.any()):
            break
        scale = torch.where(short, torch.nextafter(scale, torch.full_like(scale, float("inf"))), scale)
    return scale, zero


def quantize(x: Tensor, bits: int, group_size: int | None = DEFAULT_GROUP_SIZE,
             param_dtype: str = "float16") -> Quantized:
    """RTN-quantises a 2-D tensor in groups along its last dimension.

    Args:
        x: (rows, cols) tensor.
        bits: one of 2, 3, 4, 8.
        group_size: entries per group; ``None`` or 0 means one group per row.
        param_dtype: storage dtype of scale and zero.

    Returns:
        The packed :class:`Quantized` tensor.
    """
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    if x.dim() != 2:
        raise ValueError(f"quantize expects a 2-D tensor, got shape {tuple(x.shape)}")
    rows, cols = x.shape
    g = group_width(cols, group_size)
    n_groups = -(-cols // g) if cols else 0
    x = x.float()
    pad = n_groups * g - cols
    # Padding repeats the last column, which leaves each group's min and max unchanged.
    xp = torch.cat([x, x[:, -1:].expand(rows, pad)], dim=1) if pad else x
    grouped = xp.reshape(rows, n_groups, g)
    levels = (1 << bits) - 1
    scale, zero = _grid(grouped.amin(dim=2), grouped.amax(dim=2), levels, resolve_dtype(param_dtype))
    s = scale.float().unsqueeze(2)
    safe = torch.where(s > 0, s, torch.ones_like(s))  # a constant group has scale 0: every code is 0
    codes = torch.round((grouped - zero.float().unsqueeze(2)) / safe).clamp_(0, levels)
    codes = torch.where(s > 0, codes, torch.zeros_like(codes))
    codes = codes.reshape(rows, n_groups * g)[:, :cols]
    return Quantized(pack_bits(codes.to(torch.uint8), bits), scale, zero, bits, g, (rows, cols))


def dequantize(q: Quantized) -> Tensor:
    """Float32 reconstruction of a :class:`Quantized` tensor."""
    rows, cols = q.shape
    codes = unpack_bits(q.codes, q.bits, rows * cols).view(rows, cols).float()
    scale = q.scale.float().repeat_interleave(q.group_size, dim=1)[:, :cols]
    zero = q.zero.float().repeat_interleave(q.group_size, dim=1)[:, :cols]
    return codes * scale + zero


# --------------------------------------------------------------------- mixed precision singular vectors


def parse_schedule(schedule: Sequence[Sequence[int | str | None]], rank: int) -> list[tuple[int, int, int]]:
    """Turns a ``[(count, bits), ...]`` schedule into ``(start, end, bits)`` segments covering ``rank``.

    ``count`` may be ``None``, ``"rest"`` or ``-1`` for "all remaining vectors". Empty segments are dropped.
    Raises if the schedule does not cover ``rank`` vectors.
    """
    segments: list[tuple[int, int, int]] = []
    start = 0
    for item in schedule:
        count, bits = item
        bits = int(bits)
        if bits not in SUPPORTED_BITS and bits != FP16_BITS:
            raise ValueError(f"schedule bits must be in {SUPPORTED_BITS} or {FP16_BITS}, got {bits}")
        n = rank - start if count in (None, "rest", -1) else int(count)
        if n < 0:
            raise ValueError(f"negative count in schedule {list(schedule)}")
        end = min(rank, start + n)
        if end > start:
            segments.append((start, end, bits))
        start = end
    if start < rank:
        raise ValueError(f"schedule {list(schedule)} covers {start} singular vectors, need {rank}; add a (rest, bits) entry")
    return segments


def quantize_factors(
    u: Tensor, s: Tensor, vh: Tensor,
    schedule: Sequence[Sequence[int | str | None]] = DEFAULT_SCHEDULE,
    group_size: int | None = DEFAULT_GROUP_SIZE,
    param_dtype: str = "float16",
) -> tuple[dict[str, Tensor], list[list[int]]]:
    """Mixed-precision RTN quantisation of ``u @ diag(s) @ vh`` (σ sorted descending).

    σ is folded in as ``sqrt(σ)`` on both sides so the two factors have comparable ranges. Vectors
    are assigned bit widths by σ rank following ``schedule``. Groups run along each singular vector
    (columns of ``u``, rows of ``vh``), so no group mixes vectors of different σ.

    Returns:
        ``(tensors, segments)``: tensors named ``u{i}.*`` / ``v{i}.*`` for segment ``i``, and the
        ``[start, end, bits]`` segments needed by :func:`dequantize_factors`.
    """
    rank = s.numel()
    root = s.float().clamp_min(0).sqrt()
    a = (u.float() * root).t()  # (rank, m): one row per left singular vector
    b = vh.float() * root.unsqueeze(1)  # (rank, n)
    tensors: dict[str, Tensor] = {}
    segments = parse_schedule(schedule, rank)
    for i, (start, end, bits) in enumerate(segments):
        for side, mat in (("u", a), ("v", b)):
            block = mat[start:end].contiguous()
            if bits == FP16_BITS:
                tensors[f"{side}{i}.values"] = block.to(torch.float16)
            else:
                tensors.update(quantize(block, bits, group_size, param_dtype).tensors(f"{side}{i}"))
    return tensors, [list(seg) for seg in segments]


def dequantize_factors(
    tensors: dict[str, Tensor], segments: Sequence[Sequence[int]], m: int, n: int, group_size: int | None
) -> tuple[Tensor, Tensor]:
    """Rebuilds float32 factors ``(A, B)`` with ``A @ B`` ≈ the original matrix (A: m×r, B: r×n)."""
    a_rows, b_rows = [], []
    for i, (start, end, bits) in enumerate(segments):
        for side, width, out in (("u", m, a_rows), ("v", n, b_rows)):
            if bits == FP16_BITS:
                out.append(tensors[f"{side}{i}.values"].float())
            else:
                g = group_width(width, group_size)
                out.append(dequantize(Quantized.from_tensors(tensors, f"{side}{i}", bits, g, (end - start, width))))
    a = torch.cat(a_rows, dim=0).t() if a_rows else torch.zeros(m, 0)
    b = torch.cat(b_rows, dim=0) if b_rows else torch.zeros(0, n)
    return a, b

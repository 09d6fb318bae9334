"""``bitdelta``: one sign bit per entry and one scale (BitDelta; the scale distillation is
:mod:`grafting.skillpack.bitdelta`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from grafting.skillpack.compressors.base import CompressedTensor, Compressor, register
from grafting.skillpack.quant import pack_bits, unpack_bits


@register("bitdelta")
class BitDelta(Compressor):
    """``sign(Δ) * mean|Δ|``: one packed bit per entry plus one float32 scale (BitDelta, no distillation).

    Zero entries get sign +1, since one bit cannot encode three values.
    """

    def __init__(self) -> None:
        super().__init__()

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        flat = delta.detach().float().reshape(-1)
        scale = flat.abs().mean().reshape(1) if flat.numel() else torch.zeros(1)
        return CompressedTensor({"signs": pack_bits(flat >= 0, 1), "scale": scale}, self._meta(delta))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        n = math.prod(c.shape)
        signs = unpack_bits(c.tensors["signs"], 1, n).float() * 2 - 1
        return (signs * c.tensors["scale"].float()).reshape(c.shape)

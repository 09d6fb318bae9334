"""``magnitude``: keep the largest entries of the delta, stored sparse."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from grafting.skillpack.compressors.base import (
    CompressedTensor,
    Compressor,
    decode_sparse,
    encode_sparse,
    keep_count,
    register,
)
from grafting.skillpack.quant import resolve_dtype


@register("magnitude")
class Magnitude(Compressor):
    """Keeps the ``keep_count(alpha, n)`` entries with the largest ``|Δ|``; the rest become zero.

    Ties at the threshold are broken by ``torch.topk`` (arbitrary but deterministic).
    """

    def __init__(self, alpha: float = 0.1, dtype: str = "float32") -> None:
        keep_count(alpha, 0)  # validates alpha
        resolve_dtype(dtype)
        super().__init__(alpha=float(alpha), dtype=dtype)

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        flat = delta.detach().float().reshape(-1)
        k = keep_count(self.params["alpha"], flat.numel())
        idx = torch.topk(flat.abs(), k, sorted=False).indices if k else torch.zeros(0, dtype=torch.long)
        mask = torch.zeros(flat.numel(), dtype=torch.bool)
        mask[idx] = True
        values = flat[mask].to(resolve_dtype(self.params["dtype"]))
        tensors, encoding = encode_sparse(mask, values)
        return CompressedTensor(tensors, self._meta(delta, encoding=encoding, kept=k))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        n = math.prod(c.shape)
        return decode_sparse(c.tensors, c.meta["encoding"], n).reshape(c.shape)

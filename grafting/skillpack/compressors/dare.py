"""``dare``: drop entries at random, rescale the survivors, store them sparse."""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor

from grafting.skillpack.compressors.base import (
    CompressedTensor,
    Compressor,
    decode_sparse,
    encode_sparse,
    register,
)
from grafting.skillpack.quant import resolve_dtype


@register("dare")
class Dare(Compressor):
    """DARE: drop each entry with probability ``p``, rescale survivors by ``1/(1-p)``; stored sparse.

    The mask is drawn from a generator seeded with ``seed`` and a CRC of the parameter name, so
    equal-shaped matrices get independent masks and a rerun gives the same pack.
    """

    def __init__(self, p: float = 0.9, seed: int = 0, rescale: bool = True, dtype: str = "float32") -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dare drop probability p must be in [0, 1), got {p}")
        resolve_dtype(dtype)
        super().__init__(p=float(p), seed=int(seed), rescale=bool(rescale), dtype=dtype)

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        flat = delta.detach().float().reshape(-1)
        gen = torch.Generator().manual_seed((self.params["seed"] + zlib.crc32(key.encode())) % 2**63)
        mask = torch.rand(flat.numel(), generator=gen) >= self.params["p"]
        factor = 1.0 / (1.0 - self.params["p"]) if self.params["rescale"] else 1.0
        values = (flat[mask] * factor).to(resolve_dtype(self.params["dtype"]))
        tensors, encoding = encode_sparse(mask, values)
        return CompressedTensor(tensors, self._meta(delta, encoding=encoding, kept=int(mask.sum())))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        n = math.prod(c.shape)
        return decode_sparse(c.tensors, c.meta["encoding"], n).reshape(c.shape)

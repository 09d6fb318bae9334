"""``none``: uncompressed float32 (norms; GraftLLM leaves them untouched)."""

from __future__ import annotations

import torch
from torch import Tensor

from grafting.skillpack.compressors.base import CompressedTensor, Compressor, register
from grafting.skillpack.compressors.dense import Dense


@register("none")
class NoCompression(Dense):
    """Uncompressed float32, for norms (GraftLLM leaves them untouched)."""

    def __init__(self) -> None:
        Compressor.__init__(self)
        self.params = {}

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        values = delta.detach().to(torch.float32).clone().contiguous()
        return CompressedTensor({"values": values}, self._meta(delta))

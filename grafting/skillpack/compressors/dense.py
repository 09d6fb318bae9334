"""``dense``: the delta as it is, in float32, float16 or bfloat16."""

from __future__ import annotations

from torch import Tensor

from grafting.skillpack.compressors.base import CompressedTensor, Compressor, register
from grafting.skillpack.quant import resolve_dtype


@register("dense")
class Dense(Compressor):
    """Stores the delta as is, optionally in float16/bfloat16 to halve its size."""

    def __init__(self, dtype: str = "float32") -> None:
        resolve_dtype(dtype)
        super().__init__(dtype=dtype)

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        # clone: the pack must not alias the caller's tensor
        values = delta.detach().to(resolve_dtype(self.params["dtype"])).clone().contiguous()
        return CompressedTensor({"values": values}, self._meta(delta))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        return c.tensors["values"].float().reshape(c.shape)

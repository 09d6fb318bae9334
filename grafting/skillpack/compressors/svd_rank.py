"""``svd_rank``: truncated SVD at a fixed rank (and the base of the float-factor SVD methods)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from grafting.skillpack.compressors.base import CompressedTensor, Compressor, register
from grafting.skillpack.quant import resolve_dtype
from grafting.skillpack.svd import _as_matrix, _check_rank_or_beta, _decompose


class _SVDBase(Compressor):
    """Shared decompress for methods that store float factors ``A`` (m×r, σ folded in) and ``B`` (r×n)."""

    def _store(self, delta: Tensor, u: Tensor, s: Tensor, vh: Tensor, extra: dict[str, Any]) -> CompressedTensor:
        dtype = resolve_dtype(self.params["dtype"])
        a = (u * s).to(dtype).contiguous()
        b = vh.to(dtype).contiguous()
        return CompressedTensor({"A": a, "B": b}, self._meta(delta, **extra))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        return (c.tensors["A"].float() @ c.tensors["B"].float()).reshape(c.shape)


@register("svd_rank")
class SVDRank(_SVDBase):
    """Truncated SVD at a fixed rank r (GraftLLM's choice for attention)."""

    def __init__(self, rank: int = 64, randomized: bool = False, niter: int = 2, oversample: int = 8,
                 dtype: str = "float32") -> None:
        _check_rank_or_beta(rank, None)
        resolve_dtype(dtype)
        super().__init__(rank=int(rank), randomized=bool(randomized), niter=int(niter),
                         oversample=int(oversample), dtype=dtype)

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        p = self.params
        u, s, vh, extra = _decompose(_as_matrix(delta, self.name), p["rank"], None, None,
                                     p["randomized"], p["niter"], p["oversample"])
        return self._store(delta, u, s, vh, extra)

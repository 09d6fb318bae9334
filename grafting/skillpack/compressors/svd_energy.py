"""``svd_energy``: SVD at the smallest rank that keeps a share of the energy."""

from __future__ import annotations

from torch import Tensor

from grafting.skillpack.compressors.base import CompressedTensor, register
from grafting.skillpack.compressors.svd_rank import _SVDBase
from grafting.skillpack.quant import resolve_dtype
from grafting.skillpack.svd import _as_matrix, _check_rank_or_beta, _decompose


@register("svd_energy")
class SVDEnergy(_SVDBase):
    """SVD at the smallest rank keeping a fraction ``beta`` of the energy (GraftLLM's choice for MLPs)."""

    def __init__(self, beta: float = 0.9, max_rank: int | None = None, randomized: bool = False,
                 niter: int = 2, oversample: int = 8, dtype: str = "float32") -> None:
        _check_rank_or_beta(None, beta)
        resolve_dtype(dtype)
        if randomized and max_rank is None:
            raise ValueError("svd_energy with randomized=True needs max_rank (how many directions to compute)")
        super().__init__(beta=float(beta), max_rank=max_rank, randomized=bool(randomized), niter=int(niter),
                         oversample=int(oversample), dtype=dtype)

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        p = self.params
        u, s, vh, extra = _decompose(_as_matrix(delta, self.name), None, p["beta"], p["max_rank"],
                                     p["randomized"], p["niter"], p["oversample"])
        return self._store(delta, u, s, vh, extra)

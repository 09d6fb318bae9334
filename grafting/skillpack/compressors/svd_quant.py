"""``svd_quant``: SVD, then mixed-precision quantisation of the factors (round-to-nearest or GPTQ)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from grafting import names
from grafting.skillpack.compressors.base import CompressedTensor, Compressor, register
from grafting.skillpack.gptq import gptq_factors
from grafting.skillpack.quant import (
    DEFAULT_GROUP_SIZE,
    DEFAULT_SCHEDULE,
    dequantize_factors,
    parse_schedule,
    quantize_factors,
    resolve_dtype,
)
from grafting.skillpack.svd import _as_matrix, _check_rank_or_beta, _decompose

QUANTIZERS = names.QUANTIZERS

@register("svd_quant")
class SVDQuant(Compressor):
    """SVD (fixed ``rank`` or energy ``beta``) then mixed-precision quantisation of the factors.

    Singular vectors get bits by σ rank following ``schedule`` (default ``[[20, 8], [180, 4],
    [None, 2]]``: 20 at int8, 180 at int4, the rest at int2); σ is folded into both factors as
    ``sqrt(σ)``. The stored bytes are the packed codes plus per-group scale and zero, nothing else.

    ``quantizer``: ``rtn`` (round-to-nearest, no data) or ``gptq`` (error feedback from the layer's
    input Hessian, :mod:`grafting.skillpack.gptq`). A matrix compressed without a Hessian (the
    embedding, GPT-2's Conv1D weights, or no calibration data) falls back to RTN; each module's meta
    records the ``quantizer`` actually used.
    """

    uses_calibration = True

    def __init__(self, rank: int | None = None, beta: float | None = None, max_rank: int | None = None,
                 schedule: Sequence[Sequence[Any]] = DEFAULT_SCHEDULE, group_size: int | None = DEFAULT_GROUP_SIZE,
                 param_dtype: str = "float16", randomized: bool = False, niter: int = 2,
                 oversample: int = 8, quantizer: str = "rtn", damp: float = 0.01) -> None:
        _check_rank_or_beta(rank, beta)
        resolve_dtype(param_dtype)
        if quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
        if not damp >= 0:
            raise ValueError(f"damp must be >= 0, got {damp}")
        if randomized and rank is None and max_rank is None:
            raise ValueError("svd_quant with beta and randomized=True needs max_rank")
        schedule = [[None if c in (None, "rest", -1) else int(c), int(b)] for c, b in schedule]
        parse_schedule(schedule, 0)  # validates the bit widths now, not at the first matrix
        super().__init__(rank=None if rank is None else int(rank), beta=None if beta is None else float(beta),
                         max_rank=max_rank, schedule=schedule, group_size=group_size, param_dtype=param_dtype,
                         randomized=bool(randomized), niter=int(niter), oversample=int(oversample),
                         quantizer=quantizer, damp=float(damp))

    def compress(self, delta: Tensor, *, key: str = "", hessian: Tensor | None = None) -> CompressedTensor:
        """``hessian``: (in × in) second moment of the layer's inputs, used when ``quantizer="gptq"``."""
        p = self.params
        mat = _as_matrix(delta, self.name)
        u, s, vh, extra = _decompose(mat, p["rank"], p["beta"], p["max_rank"], p["randomized"],
                                     p["niter"], p["oversample"])
        use_gptq = p["quantizer"] == "gptq" and hessian is not None
        if use_gptq:
            tensors, segments = gptq_factors(u, s, vh, hessian, p["schedule"], p["group_size"], p["param_dtype"],
                                             p["damp"])
        else:
            tensors, segments = quantize_factors(u, s, vh, p["schedule"], p["group_size"], p["param_dtype"])
        return CompressedTensor(tensors, self._meta(delta, segments=segments, matrix=list(mat.shape),
                                                    quantizer="gptq" if use_gptq else "rtn", **extra))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        m, n = c.meta["matrix"]
        a, b = dequantize_factors(c.tensors, c.meta["segments"], m, n, c.meta["params"]["group_size"])
        return (a @ b).reshape(c.shape)

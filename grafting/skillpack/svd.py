"""SVD-based compressors: fixed rank, energy rank, and SVD + mixed-precision quantisation.

Decomposition: by default ``torch.linalg.svd`` (exact up to float32 rounding; the kept factors are
the optimal rank-r approximation in Frobenius norm). With ``randomized=True``,
``torch.svd_lowrank`` computes only ``rank + oversample`` directions with ``niter`` power
iterations; it is exact only when the delta's rank is at most ``rank + oversample``, and an
approximation otherwise, but much cheaper for large matrices.

Tensors with more than two dimensions are flattened to ``(shape[0], -1)``; 1-D tensors are refused
(the module-aware policy routes biases and norms to dense storage).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from grafting import names
from grafting.skillpack.compressors import CompressedTensor, Compressor, register
from grafting.skillpack.gptq import gptq_factors
from grafting.skillpack.quant import (
    DEFAULT_GROUP_SIZE,
    DEFAULT_SCHEDULE,
    dequantize_factors,
    parse_schedule,
    quantize_factors,
    resolve_dtype,
)


def _as_matrix(delta: Tensor, method: str) -> Tensor:
    if delta.dim() < 2:
        raise ValueError(f"{method} needs a tensor with >= 2 dims, got shape {tuple(delta.shape)}; "
                         "store 1-D tensors (biases, norms) with 'dense' or 'none'")
    return delta.detach().float().reshape(delta.shape[0], -1)


#: Matrices with at most this many columns (after making them tall) are decomposed on one thread.
SMALL_SVD = 512


@contextmanager
def _one_thread(enabled: bool) -> Iterator[None]:
    # Measured on a shared 2-core machine: MKL's threaded SVD of a 192x64 matrix took 0.54 s, the
    # single-threaded one 0.9 ms. Small SVDs gain nothing from threads, so they get one.
    before = torch.get_num_threads()
    if enabled and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


#: Active :func:`shared_svd` memo: input tensor identity -> (the tensor, its full SVD); None: no sharing.
_SHARED: dict[tuple, tuple[Tensor, tuple[Tensor, Tensor, Tensor]]] | None = None


@contextmanager
def shared_svd() -> Iterator[None]:
    """Within the block, each matrix's exact SVD is computed once and truncated per request.

    A budget curve compresses the same delta at many ranks (every level a binary search tries, for
    every budget and SVD family); ``torch.linalg.svd`` then ran once per rank on the same matrix. Its
    top-r slice is what a fresh call followed by the same slice returns, so results are bit-identical
    (``tests/test_skillpack_budget.py``). Keys are the tensor's storage, shape, strides and version, so
    an in-place change of the delta is never served a stale SVD.
    """
    global _SHARED
    outer, _SHARED = _SHARED, {} if _SHARED is None else _SHARED
    try:
        yield
    finally:
        _SHARED = outer


def _full_svd(mat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if _SHARED is None:
        return torch.linalg.svd(mat, full_matrices=False)
    key = (mat.data_ptr(), tuple(mat.shape), mat.stride(), mat.dtype, mat._version)
    if key not in _SHARED:
        # the memo holds the tensor itself, so its storage cannot be freed and reused by another matrix
        _SHARED[key] = (mat, torch.linalg.svd(mat, full_matrices=False))
    return _SHARED[key][1]


def truncated_svd(mat: Tensor, rank: int, randomized: bool = False, niter: int = 2,
                  oversample: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``rank`` singular triplets ``(U m×r, S r, Vh r×n)``, S descending."""
    if mat.shape[0] < mat.shape[1]:
        # LAPACK is faster on tall matrices (measured 1.5x on 768x3072); the SVD of the transpose is exact.
        u, s, vh = truncated_svd(mat.t(), rank, randomized, niter, oversample)
        return vh.t(), s, u.t()
    rank = max(0, min(rank, *mat.shape))
    with _one_thread(min(mat.shape) <= SMALL_SVD):
        if randomized:
            q = min(rank + oversample, *mat.shape)
            u, s, v = torch.svd_lowrank(mat, q=q, niter=niter, M=None)
            return u[:, :rank], s[:rank], v[:, :rank].t()
        u, s, vh = _full_svd(mat)
    return u[:, :rank], s[:rank], vh[:rank]


def energy_rank(s: Tensor, beta: float, total: float | None = None) -> int:
    """Smallest k with ``sum_{i<=k} s_i^2 >= beta * total`` (total defaults to ``sum s^2``).

    Returns ``len(s)`` when the threshold is not reached (only possible with a truncated spectrum)
    and 0 for an all-zero spectrum.
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"energy ratio beta must be in (0, 1], got {beta}")
    s2 = s.double() ** 2
    total = float(s2.sum()) if total is None else float(total)
    if total <= 0.0:
        return 0
    below = int((torch.cumsum(s2, 0) < beta * total).sum())
    return min(below + 1, s.numel())


def _decompose(mat: Tensor, rank: int | None, beta: float | None, max_rank: int | None,
               randomized: bool, niter: int, oversample: int) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """SVD at a fixed rank, or at the energy rank for ``beta``; returns factors and meta extras."""
    full = min(mat.shape)
    if rank is not None:
        u, s, vh = truncated_svd(mat, rank, randomized, niter, oversample)
        return u, s, vh, {"rank": int(s.numel())}
    cap = full if max_rank is None else min(full, int(max_rank))
    u, s, vh = truncated_svd(mat, cap if randomized else full, randomized, niter, oversample)
    # ||Δ||_F^2 is the exact total energy even when only part of the spectrum was computed
    k = min(energy_rank(s, beta, total=float(mat.double().pow(2).sum())), cap)
    return u[:, :k], s[:k], vh[:k], {"rank": k}


def _check_rank_or_beta(rank: int | None, beta: float | None) -> None:
    if (rank is None) == (beta is None):
        raise ValueError("give exactly one of rank or beta")
    if rank is not None and int(rank) < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    if beta is not None and not 0.0 < float(beta) <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")


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

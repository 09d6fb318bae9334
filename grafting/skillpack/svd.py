"""The SVD behind the SVD compressors (``svd_rank``, ``svd_energy``, ``svd_quant`` in ``compressors/``).

Decomposition: by default ``torch.linalg.svd`` (exact up to float32 rounding; the kept factors are
the optimal rank-r approximation in Frobenius norm). With ``randomized=True``,
``torch.svd_lowrank`` computes only ``rank + oversample`` directions with ``niter`` power
iterations; it is exact only when the delta's rank is at most ``rank + oversample``, and an
approximation otherwise, but much cheaper for large matrices.

Tensors with more than two dimensions are flattened to ``(shape[0], -1)``; 1-D tensors are refused
(the module-aware policy routes biases and norms to dense storage).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor


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

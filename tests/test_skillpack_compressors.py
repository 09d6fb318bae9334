"""Compressors against reference computations: SVD truncation, energy rank, top-k, BitDelta, DARE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grafting.skillpack.compressors import (
    COMPRESSORS,
    CompressedTensor,
    Compressor,
    decompress,
    get_compressor,
    keep_count,
    register,
)
from grafting.skillpack.svd import energy_rank


def _low_rank_plus_noise(m: int, n: int, r: int, noise: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, r, generator=gen) @ torch.randn(r, n, generator=gen) / math.sqrt(r) + noise * torch.randn(
        m, n, generator=gen)


def test_registry_lists_all_methods_and_rejects_unknown() -> None:
    expected = {"dense", "none", "keep", "magnitude", "svd_rank", "svd_energy", "svd_quant", "bitdelta", "dare"}
    assert expected <= set(COMPRESSORS)
    with pytest.raises(ValueError, match="unknown compressor 'nope'"):
        get_compressor("nope")
    with pytest.raises(TypeError, match="svd_rank"):
        get_compressor("svd_rank", {"rnak": 3})
    with pytest.raises(ValueError, match="exactly one"):
        get_compressor("svd_quant", {"rank": 4, "beta": 0.5})


def test_register_adds_a_method() -> None:
    @register("_test_zero")
    class Zero(Compressor):
        def compress(self, delta, *, key=""):
            return CompressedTensor({}, self._meta(delta))

        @classmethod
        def decompress(cls, c):
            return torch.zeros(c.shape)

    try:
        c = get_compressor("_test_zero").compress(torch.ones(2, 3))
        assert torch.equal(decompress(c), torch.zeros(2, 3))
    finally:
        del COMPRESSORS["_test_zero"]


@pytest.mark.parametrize("shape", [(30, 50), (50, 30)])  # wide matrices are decomposed transposed
@pytest.mark.parametrize("rank", [1, 5, 12])
def test_svd_rank_matches_reference_truncation(rank: int, shape: tuple[int, int]) -> None:
    d = _low_rank_plus_noise(*shape, 8, 0.1)
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    reference = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
    c = get_compressor("svd_rank", {"rank": rank}).compress(d)
    torch.testing.assert_close(decompress(c), reference, rtol=1e-5, atol=1e-5)
    assert c.meta["rank"] == rank
    assert c.nbytes == rank * sum(shape) * 4


def test_svd_randomized_is_exact_for_low_rank() -> None:
    d = _low_rank_plus_noise(60, 80, 6, 0.0)
    c = get_compressor("svd_rank", {"rank": 6, "randomized": True}).compress(d)
    torch.testing.assert_close(decompress(c), d, rtol=1e-4, atol=1e-4)


def _numpy_energy_rank(s: np.ndarray, beta: float) -> int:
    energy = s.astype(np.float64) ** 2
    for k in range(1, len(s) + 1):
        if energy[:k].sum() >= beta * energy.sum():
            return k
    return len(s)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.8, 0.95, 0.999, 1.0])
def test_energy_rank_is_smallest_meeting_beta(beta: float) -> None:
    d = _low_rank_plus_noise(40, 64, 5, 0.2, seed=3)
    s = np.linalg.svd(d.double().numpy(), compute_uv=False)
    k_ref = _numpy_energy_rank(s, beta)
    c = get_compressor("svd_energy", {"beta": beta}).compress(d)
    assert abs(c.meta["rank"] - k_ref) <= (1 if beta == 1.0 else 0)  # beta=1 is decided by rounding
    if beta < 1.0:
        energy = s**2
        assert energy[: c.meta["rank"]].sum() >= beta * energy.sum()
        assert energy[: c.meta["rank"] - 1].sum() < beta * energy.sum()
        u, sv, vh = torch.linalg.svd(d, full_matrices=False)
        k = c.meta["rank"]
        torch.testing.assert_close(decompress(c), u[:, :k] @ torch.diag(sv[:k]) @ vh[:k], rtol=1e-5, atol=1e-5)


def test_energy_rank_edge_cases() -> None:
    assert energy_rank(torch.zeros(4), 0.9) == 0
    assert energy_rank(torch.tensor([3.0, 4.0]), 9 / 25) == 1
    assert energy_rank(torch.tensor([3.0, 4.0]), 9 / 25 + 1e-6) == 2
    c = get_compressor("svd_energy", {"beta": 0.9}).compress(torch.zeros(5, 7))
    assert c.meta["rank"] == 0 and torch.equal(decompress(c), torch.zeros(5, 7))


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.1, 0.37, 1.0])
def test_magnitude_keeps_exactly_the_largest(alpha: float) -> None:
    gen = torch.Generator().manual_seed(7)
    d = torch.randn(33, 41, generator=gen)  # continuous values: no ties
    n = d.numel()
    k = 0 if alpha == 0 else max(1, math.floor(alpha * n + 0.5))
    c = get_compressor("magnitude", {"alpha": alpha}).compress(d)
    out = decompress(c)
    kept = out != 0
    assert int(kept.sum()) == k == c.meta["kept"]
    assert torch.equal(out[kept], d[kept])  # kept values are exact
    order = d.abs().reshape(-1).argsort(descending=True)
    expected = torch.zeros(n, dtype=torch.bool)
    expected[order[:k]] = True
    assert torch.equal(kept.reshape(-1), expected)


def test_magnitude_encoding_is_the_cheaper_one() -> None:
    d = torch.randn(64, 64)
    sparse = get_compressor("magnitude", {"alpha": 0.01}).compress(d)
    assert sparse.meta["encoding"] == "int32" and sparse.tensors["indices"].dtype == torch.int32
    dense_ish = get_compressor("magnitude", {"alpha": 0.3}).compress(d)
    assert dense_ish.meta["encoding"] == "bitmask"
    k = dense_ish.meta["kept"]
    assert dense_ish.nbytes == 64 * 64 // 8 + 4 * k  # mask bits + float32 values
    assert sparse.nbytes == 8 * sparse.meta["kept"]  # int32 index + float32 value


def test_keep_count() -> None:
    assert keep_count(0.1, 100) == 10  # not 11 from 0.1*100 = 10.000000000000002
    assert keep_count(0.001, 10) == 1
    assert keep_count(0.0, 10) == 0
    assert keep_count(0.25, 10) == 3  # 2.5 rounds half up


def test_bitdelta_reference() -> None:
    d = torch.randn(9, 13)
    c = get_compressor("bitdelta").compress(d)
    expected = torch.where(d >= 0, 1.0, -1.0) * d.abs().mean()
    torch.testing.assert_close(decompress(c), expected)
    assert c.tensors["signs"].nbytes == math.ceil(9 * 13 / 8)


def test_dare_drops_rescales_and_is_seeded() -> None:
    d = torch.randn(200, 100)
    comp = get_compressor("dare", {"p": 0.75, "seed": 3})
    out = decompress(comp.compress(d, key="w"))
    kept = out != 0
    assert 0.22 < float(kept.float().mean()) < 0.28
    torch.testing.assert_close(out[kept], d[kept] * 4)
    assert torch.equal(out, decompress(comp.compress(d, key="w")))
    assert not torch.equal(out, decompress(comp.compress(d, key="other")))
    assert torch.equal(decompress(get_compressor("dare", {"p": 0.0}).compress(d)), d)


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 1e-3), ("bfloat16", 1e-2)])
def test_dense_storage_dtypes(dtype: str, tol: float) -> None:
    d = torch.randn(5, 6)
    c = get_compressor("dense", {"dtype": dtype}).compress(d)
    assert c.nbytes == 30 * (4 if dtype == "float32" else 2)
    torch.testing.assert_close(decompress(c), d, rtol=tol, atol=tol)
    assert torch.equal(decompress(get_compressor("none").compress(d)), d)


def test_svd_quant_sizes_are_honest() -> None:
    d = _low_rank_plus_noise(64, 256, 16, 0.01)
    c = get_compressor("svd_quant", {"rank": 40, "schedule": [[4, 8], [12, 4], [None, 2]], "group_size": 64}).compress(d)
    assert c.meta["segments"] == [[0, 4, 8], [4, 16, 4], [16, 40, 2]]
    codes_bits = sum((e - s) * b * (64 + 256) for s, e, b in c.meta["segments"])
    groups = sum((e - s) * (1 + 4) for s, e, _ in c.meta["segments"])  # 64/64 groups on U, 256/64 on V
    assert c.nbytes == codes_bits // 8 + groups * 2 * 2  # codes + float16 scale and zero
    rel = float((decompress(c) - d).norm() / d.norm())
    assert rel < 0.1
    with pytest.raises(ValueError, match=">= 2 dims"):
        get_compressor("svd_quant", {"rank": 2}).compress(torch.randn(5))

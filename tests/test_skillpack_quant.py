"""Bit packing and RTN quantisation, checked against independent reference computations."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grafting.skillpack.quant import (
    dequantize,
    dequantize_factors,
    pack_bits,
    parse_schedule,
    quantize,
    quantize_factors,
    unpack_bits,
)


def _reference_pack(codes: list[int], bits: int) -> bytes:
    """Python-int bitstream, LSB first: code i occupies bits [i*bits, (i+1)*bits)."""
    acc = 0
    for i, c in enumerate(codes):
        acc |= c << (i * bits)
    return acc.to_bytes((len(codes) * bits + 7) // 8, "little")


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("n", [0, 1, 3, 7, 8, 13, 129, 1001])
def test_pack_round_trip_every_width(bits: int, n: int) -> None:
    gen = torch.Generator().manual_seed(bits * 1000 + n)
    codes = torch.randint(0, 1 << bits, (n,), generator=gen)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == (n * bits + 7) // 8
    assert bytes(packed.tolist()) == _reference_pack(codes.tolist(), bits)
    assert torch.equal(unpack_bits(packed, bits, n), codes.to(torch.uint8))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([2, 3, 4, 8]), st.lists(st.integers(0, 255), max_size=300))
def test_pack_round_trip_property(bits: int, raw: list[int]) -> None:
    codes = torch.tensor([r % (1 << bits) for r in raw], dtype=torch.int64)
    assert torch.equal(unpack_bits(pack_bits(codes, bits), bits, len(raw)), codes.to(torch.uint8))


def test_pack_rejects_out_of_range_codes() -> None:
    with pytest.raises(ValueError, match="out of range"):
        pack_bits(torch.tensor([0, 4]), 2)


def test_two_bit_codes_take_one_sixteenth_of_fp32() -> None:
    x = torch.randn(64, 512)
    q = quantize(x, 2, group_size=128)
    assert q.codes.nbytes * 16 == x.nbytes
    # scale + zero in float16, one pair per 128 values: 0.25 extra bits per value
    assert q.scale.nbytes + q.zero.nbytes == 64 * 4 * 2 * 2


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [128, 50, None])
def test_quantisation_error_within_half_step(bits: int, group_size: int | None) -> None:
    x = torch.randn(7, 301, generator=torch.Generator().manual_seed(bits)) * 0.01
    q = quantize(x, bits, group_size)
    err = (dequantize(q) - x).abs()
    g = 301 if group_size is None else group_size
    step = q.scale.float().repeat_interleave(g, dim=1)[:, :301]
    assert bool((err <= step / 2 * (1 + 1e-4) + 1e-12).all())
    # the grid covers each group, so the extremes are never clamped by more than half a step
    assert q.scale.shape == (7, -(-301 // g))


def test_constant_groups() -> None:
    zeros = torch.zeros(2, 40)
    assert torch.equal(dequantize(quantize(zeros, 2, 16)), zeros)
    const = torch.full((2, 40), 0.123)
    assert float((dequantize(quantize(const, 2, 16)) - const).abs().max()) < 1e-4


def test_more_bits_is_more_accurate() -> None:
    x = torch.randn(16, 256, generator=torch.Generator().manual_seed(0))
    errs = [float((dequantize(quantize(x, b)) - x).norm()) for b in (2, 3, 4, 8)]
    assert errs == sorted(errs, reverse=True)
    assert errs[-1] < errs[0] / 30


def test_parse_schedule() -> None:
    assert parse_schedule([(20, 8), (180, 4), (None, 2)], 300) == [(0, 20, 8), (20, 200, 4), (200, 300, 2)]
    assert parse_schedule([(2, 8), (32, 3), ("rest", 2)], 10) == [(0, 2, 8), (2, 10, 3)]
    with pytest.raises(ValueError, match="covers 5"):
        parse_schedule([(5, 8)], 6)
    with pytest.raises(ValueError, match="bits"):
        parse_schedule([(None, 5)], 6)


def test_mixed_precision_factors() -> None:
    gen = torch.Generator().manual_seed(1)
    mat = torch.randn(40, 24, generator=gen) @ torch.randn(24, 70, generator=gen)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    u, s, vh = u[:, :24], s[:24], vh[:24]  # mat has rank 24
    tensors, segments = quantize_factors(u, s, vh, [(2, 8), (10, 3), (None, 2)], group_size=32)
    assert segments == [[0, 2, 8], [2, 12, 3], [12, 24, 2]]
    # the segment's codes have exactly the bits the schedule assigns
    assert tensors["u0.codes"].numel() == (2 * 40 * 8 + 7) // 8
    assert tensors["v1.codes"].numel() == (10 * 70 * 3 + 7) // 8
    assert tensors["u2.codes"].numel() == (12 * 40 * 2 + 7) // 8
    a, b = dequantize_factors(tensors, segments, 40, 70, 32)
    # each factor row is within half a step of sqrt(σ)-scaled singular vectors
    root = s.sqrt()
    assert torch.allclose(a[:, :2], u[:, :2] * root[:2], atol=float(tensors["u0.scale"].float().max()) / 2 + 1e-6)
    rel = float((a @ b - mat).norm() / mat.norm())
    assert rel < 0.35
    # all-8-bit is much closer than all-2-bit
    t8, seg8 = quantize_factors(u, s, vh, [(None, 8)], group_size=32)
    a8, b8 = dequantize_factors(t8, seg8, 40, 70, 32)
    assert float((a8 @ b8 - mat).norm() / mat.norm()) < rel / 10

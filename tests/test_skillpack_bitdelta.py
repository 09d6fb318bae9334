"""BitDelta scale distillation against the closed-form least-squares scale of one linear layer."""

from __future__ import annotations

import torch
from torch import nn

from grafting.skillpack.bitdelta import distill_scales
from grafting.skillpack.compressors import decompress, get_compressor


def test_distilled_scale_is_the_least_squares_scale() -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 8, bias=False)
    delta = torch.randn(8, 16) * 0.05 + 0.03 * torch.randn(8, 1)  # row-wise structure the sign misses
    teacher = nn.Linear(16, 8, bias=False)
    with torch.no_grad():
        teacher.weight.copy_(base.weight + delta)
    x = torch.randn(64, 16) @ torch.randn(16, 16)  # correlated inputs
    pack = {"weight": get_compressor("bitdelta").compress(delta, key="weight")}
    signs = decompress(pack["weight"]) / pack["weight"].tensors["scale"]
    # min_a ||a S X - Δ X||²  ->  a* = <S X, Δ X> / ||S X||²
    sx, dx = x @ signs.t(), x @ delta.t()
    best = float((sx * dx).sum() / (sx * sx).sum())
    assert abs(float(pack["weight"].tensors["scale"]) - best) > 0.05 * abs(best)  # mean|Δ| is not it
    before = base.weight.detach().clone()
    out, losses = distill_scales(base, teacher, pack, [{"input": x}], steps=400, lr=2e-2, output=lambda y: y)
    assert abs(float(out["weight"].tensors["scale"]) - best) < 1e-3 * abs(best)
    assert losses["loss_after"] < losses["loss_before"]
    assert out["weight"].meta["distilled"] and torch.equal(out["weight"].tensors["signs"], pack["weight"].tensors["signs"])
    assert torch.equal(base.weight, before)  # the base is never modified

"""Equal byte budgets: each method's chosen pack fits, and the next setting up would not."""

from __future__ import annotations

import pytest
import torch

from grafting.skillpack.budget import (
    DEFAULT_BUDGETS,
    FAMILIES,
    choose_for_budget,
    dense_bytes,
    fit_budget,
    lora_rank_for_budget,
    pack_bytes,
)


def _delta(d: int = 64, vocab: int = 512) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)

    def low_rank(m: int, n: int) -> torch.Tensor:  # fine-tuning deltas: a decaying spectrum plus noise
        return (torch.randn(m, 8, generator=gen) @ torch.randn(8, n, generator=gen) / 8
                + 0.05 * torch.randn(m, n, generator=gen)) * 1e-3

    layer = "gpt_neox.layers.0."
    return {"gpt_neox.embed_in.weight": low_rank(vocab, d), "embed_out.weight": low_rank(vocab, d),
            layer + "attention.query_key_value.weight": low_rank(3 * d, d),
            layer + "attention.query_key_value.bias": torch.randn(3 * d, generator=gen) * 1e-3,
            layer + "attention.dense.weight": low_rank(d, d),
            layer + "mlp.dense_h_to_4h.weight": low_rank(4 * d, d), layer + "mlp.dense_4h_to_h.weight": low_rank(d, 4 * d),
            layer + "input_layernorm.weight": torch.randn(d, generator=gen) * 1e-3}


def test_fit_budget_picks_the_largest_level_that_fits() -> None:
    sizes = [3, 5, 5, 9, 20]
    calls: list[int] = []

    def size(i: int) -> int:
        calls.append(i)
        return sizes[i]

    assert fit_budget(size, 5, 9) == 3 and fit_budget(size, 5, 8) == 2 and fit_budget(size, 5, 100) == 4
    assert fit_budget(size, 5, 2) is None
    calls.clear()
    fit_budget(size, 5, 9)
    assert len(calls) <= 4  # binary search, not a scan


@pytest.mark.parametrize("method", sorted(set(FAMILIES) - {"graftllm_gptq"}))
@pytest.mark.parametrize("budget", [0.02, 0.05, 0.10])
def test_chosen_pack_fits_and_the_next_step_would_not(method: str, budget: float) -> None:
    delta = _delta()
    choice = choose_for_budget(delta, method, budget)
    cap = int(budget * dense_bytes(delta))
    assert choice.budget_bytes == cap
    if choice.compressed is None:  # even the smallest setting is too big (dense at 10%)
        assert choice.next_nbytes > cap and method in ("dense", "bitdelta")
        return
    assert choice.nbytes == pack_bytes(choice.compressed) <= cap
    assert choice.next_nbytes is None or choice.next_nbytes > cap
    assert set(choice.compressed) == set(delta)


def test_bitdelta_fits_only_above_one_bit_per_entry() -> None:
    delta = _delta()
    assert choose_for_budget(delta, "bitdelta", 0.02).compressed is None  # 1/32 of fp32 is 3.1%
    assert choose_for_budget(delta, "bitdelta", 0.05).compressed is not None


def test_gptq_family_uses_the_hessians() -> None:
    delta = _delta()
    hessians = {n: torch.eye(d.shape[1]) * 2 for n, d in delta.items() if d.dim() == 2 and "embed_in" not in n}
    choice = choose_for_budget(delta, "graftllm_gptq", 0.05, hessians)
    quantizers = {c.meta.get("quantizer") for n, c in choice.compressed.items() if c.meta["method"] == "svd_quant"}
    assert quantizers == {"gptq"} and choice.nbytes <= choice.budget_bytes


def test_lora_rank_for_budget() -> None:
    assert lora_rank_for_budget(1000, values_per_rank=100, bytes_per_value=2) == 5
    assert lora_rank_for_budget(999, values_per_rank=100, bytes_per_value=2) == 4
    assert lora_rank_for_budget(100, values_per_rank=100, bytes_per_value=2) == 0
    assert DEFAULT_BUDGETS == (0.01, 0.02, 0.03, 0.05, 0.10)


def _same_packs(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].tensors.keys() == b[k].tensors.keys() and all(torch.equal(a[k].tensors[t], b[k].tensors[t])
                                                           for t in a[k].tensors) and a[k].meta == b[k].meta
        for k in a)


@pytest.mark.parametrize("method", ["svd", "svd_quant", "graftllm", "graftllm_gptq", "dare"])
def test_shared_svd_and_level_memo_give_the_packs_of_fresh_searches(method) -> None:
    """One SVD per matrix and one pack per level for all budgets: bit-identical to a fresh search each."""
    from grafting.skillpack.svd import _SHARED, shared_svd, truncated_svd

    delta = _delta()
    gen = torch.Generator().manual_seed(1)
    hessians = None
    if method.endswith("gptq"):
        x = torch.randn(256, 64, generator=gen)
        hessians = {k: x.t() @ x / 256 for k, v in delta.items() if v.dim() == 2 and v.shape[1] == 64
                    and "embed" not in k}
    fresh = [choose_for_budget(delta, method, f, hessians) for f in DEFAULT_BUDGETS]
    memo: dict = {}
    calls = []
    real_svd = torch.linalg.svd
    try:
        torch.linalg.svd = lambda *a, **k: calls.append(1) or real_svd(*a, **k)
        with shared_svd():
            shared = [choose_for_budget(delta, method, f, hessians, memo) for f in DEFAULT_BUDGETS]
    finally:
        torch.linalg.svd = real_svd
    assert _SHARED is None  # the memo ends with the block
    for a, b in zip(fresh, shared, strict=True):
        assert (a.level, a.nbytes, a.next_nbytes) == (b.level, b.nbytes, b.next_nbytes)
        assert (a.compressed is None) == (b.compressed is None)
        if a.compressed is not None:
            assert _same_packs(a.compressed, b.compressed)
    if method != "dare":
        assert 0 < len(calls) <= sum(v.dim() == 2 for v in delta.values())  # one SVD per matrix at most
    # a truncation of the shared SVD is a fresh truncated SVD
    mat = delta["embed_out.weight"]
    with shared_svd():
        truncated_svd(mat, 40)
        u, s, vh = truncated_svd(mat, 5)
    fu, fs, fvh = truncated_svd(mat, 5)
    assert torch.equal(u, fu) and torch.equal(s, fs) and torch.equal(vh, fvh)


def test_shared_svd_sees_an_in_place_change() -> None:
    from grafting.skillpack.svd import shared_svd, truncated_svd

    mat = _delta()["embed_out.weight"].clone()
    with shared_svd():
        before = truncated_svd(mat, 3)[1].clone()
        mat.mul_(2.0)
        after = truncated_svd(mat, 3)[1]
    torch.testing.assert_close(after, 2 * before)

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


def test_validation_lists_the_budget_families() -> None:
    from grafting import validation

    assert validation.BUDGET_METHODS == tuple(FAMILIES)

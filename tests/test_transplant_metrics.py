"""TIR, Recovery (incl. zero gap / zero target) and KL to the target on general text."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from grafting.transplant import candidate_modules, general_text_kl, recovery, tir, transplanted


def neox(seed: int) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.2,  # sharper distributions than the default so KLs are not ~0
    )
    return GPTNeoXForCausalLM(cfg).eval()


def gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=128,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.2,
    )
    return GPT2LMHeadModel(cfg).eval()


def test_tir() -> None:
    assert tir(0.4, 0.2).value == pytest.approx(2.0)
    assert tir(0.1, 0.2).value == pytest.approx(0.5)
    zero = tir(0.4, 0.0)
    assert zero.value is None and zero.reason == "zero target" and not zero.defined
    assert math.isnan(float(zero))


def test_recovery() -> None:
    assert recovery(0.3, 0.2, 0.4).value == pytest.approx(0.5)
    assert recovery(0.5, 0.2, 0.4).value == pytest.approx(1.5)  # overshoot is reported as > 1
    assert recovery(0.2, 0.2, 0.4).value == 0.0
    assert recovery(0.1, 0.3, 0.1).value == pytest.approx(1.0)  # negative gap: still (t - tgt) / gap
    for res in (recovery(0.5, 0.3, 0.3), recovery(0.5, 0.3, 0.3 + 1e-15)):
        assert res.value is None and res.reason == "zero gap"
        assert math.isnan(float(res))


def _reference_kl(a, b, ids, mask) -> float:
    # Per-row, unpadded forwards: no masks or position ids involved.
    total, n = 0.0, 0
    for row, m in zip(ids, mask, strict=True):
        x = row[m.bool()].unsqueeze(0)
        la, lb = F.log_softmax(a(x).logits.float(), -1), F.log_softmax(b(x).logits.float(), -1)
        total += F.kl_div(lb, la, log_target=True, reduction="sum").item()
        n += x.shape[1]
    return total / n


# GPT-2 (absolute positions) also checks that left-padded rows get mask-aware position ids.
@pytest.mark.parametrize("build", [neox, gpt2], ids=["gptneox", "gpt2"])
@torch.no_grad()
def test_general_text_kl_matches_reference_and_ignores_padding(build) -> None:
    tgt, src = build(1), build(0)
    ids = torch.randint(1, 128, (3, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0
    ids[2, :5], mask[2, :5] = 0, 0
    assert general_text_kl(tgt, tgt, ids, mask) == pytest.approx(0.0, abs=1e-6)
    names = candidate_modules(src, tgt)[:4]
    with transplanted(tgt, src, names):
        moved = build(1)
        moved.load_state_dict(tgt.state_dict())
    kl = general_text_kl(tgt, moved, ids, mask)
    assert kl > 1e-3
    assert kl == pytest.approx(_reference_kl(tgt, moved, ids, mask), rel=1e-4)
    other_pads = ids.masked_fill(mask == 0, 77)
    assert general_text_kl(tgt, moved, other_pads, mask) == pytest.approx(kl, rel=1e-5)

"""The paper's paired L1 activation score vs a hook-free reference (wrapped modules keep full outputs)."""

from __future__ import annotations

import pytest
import torch
from test_transplant_analysis import _randomise, _tap_all, _untap
from transformers import LlamaConfig, LlamaForCausalLM

from grafting.transplant import linear_modules, paired_l1


def llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=48, max_position_embeddings=64)
    return _randomise(LlamaForCausalLM(cfg), seed)


@torch.no_grad()
def _reference(source, target, batches: list[torch.Tensor], positions: int) -> dict[str, float]:
    """Full outputs of every module of both models, compared at the last ``positions`` tokens."""
    names = list(linear_modules(target))
    outs = []
    for model in (target, source):
        taps = _tap_all(model, names)
        for b in batches:
            model(b)
        _untap(model, taps)
        outs.append(taps)
    ref = {}
    for n in names:
        diffs = [(s[:, -positions:] - t[:, -positions:]).abs().mean(-1).flatten()
                 for t, s in zip(outs[0][n].outs, outs[1][n].outs, strict=True)]
        ref[n] = torch.cat(diffs).double().mean().item()
    return ref


@pytest.mark.parametrize("positions", [1, 3])
def test_paired_l1_matches_wrapped_module_outputs(positions: int) -> None:
    source, target = llama(0), llama(1)
    batches = [torch.randint(0, 128, (2, n), generator=torch.Generator().manual_seed(n)) for n in (5, 9)]
    got = paired_l1(source, target, batches, positions=positions)
    ref = _reference(source, target, batches, positions)
    assert list(got) == list(ref) and len(got) == 2 * 7  # q, k, v, o, gate, up, down per block
    for n in ref:
        assert got[n] == pytest.approx(ref[n], rel=1e-5, abs=1e-7), n
    assert all(v > 0 for v in got.values())


def test_paired_l1_is_zero_for_equal_models_and_sees_one_changed_module() -> None:
    target = llama(0)
    source = llama(0)
    ids = torch.randint(0, 128, (3, 6), generator=torch.Generator().manual_seed(2))
    assert set(paired_l1(source, target, ids, positions=2).values()) == {0.0}
    with torch.no_grad():
        source.model.layers[1].mlp.down_proj.weight.add_(0.5)
    got = paired_l1(source, target, ids, positions=2)
    changed = {n for n, v in got.items() if v > 0}
    assert changed == {"model.layers.1.mlp.down_proj"}  # the last module: nothing after it differs


def test_left_padded_rows_equal_rows_alone() -> None:
    source, target = llama(0), llama(1)
    a, b = torch.tensor([5, 17, 3, 99, 42]), torch.tensor([7, 8, 9])
    batch = {"input_ids": torch.tensor([[5, 17, 3, 99, 42], [0, 0, 7, 8, 9]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])}
    together = paired_l1(source, target, batch, positions=2)
    alone = [paired_l1(source, target, x, positions=2) for x in (a, b)]
    for n in together:
        assert together[n] == pytest.approx((alone[0][n] + alone[1][n]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="fewer than positions=4"):
        paired_l1(source, target, batch, positions=4)
    with pytest.raises(ValueError, match="positions must be"):
        paired_l1(source, target, batch, positions=0)

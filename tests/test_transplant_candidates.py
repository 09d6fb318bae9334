"""Candidate modules: leaf linears / Conv1D shared by both models; clear errors when models differ."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from grafting.transplant import candidate_modules, check_compatible, linear_modules

NEOX_NAMES = [
    f"gpt_neox.layers.{i}.{m}"
    for i in range(2)
    for m in ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
]
GPT2_NAMES = [
    f"transformer.h.{i}.{m}"
    for i in range(2)
    for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
]


def neox(seed: int, hidden: int = 32, layers: int = 2) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=128,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(cfg).eval()


def _name_of(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def test_neox_candidates_are_block_projections_only() -> None:
    src, tgt = neox(0), neox(1)
    names = candidate_modules(src, tgt)
    assert names == NEOX_NAMES
    head, embed = _name_of(tgt, tgt.get_output_embeddings()), _name_of(tgt, tgt.get_input_embeddings())
    assert head in dict(tgt.named_modules()) and head not in names and embed not in names
    assert not any("layernorm" in n or "layer_norm" in n for n in names)


def test_gpt2_conv1d_candidates_exclude_tied_lm_head() -> None:
    src, tgt = gpt2(0), gpt2(1)
    assert tgt.get_output_embeddings().weight is tgt.transformer.wte.weight  # the head is tied here
    names = candidate_modules(src, tgt)
    assert names == GPT2_NAMES
    assert "lm_head" not in linear_modules(tgt)


def test_untied_lm_head_excluded_via_get_output_embeddings() -> None:
    m = neox(0)
    head = m.get_output_embeddings()
    assert isinstance(head, torch.nn.Linear) and head.weight is not m.get_input_embeddings().weight  # untied
    name = _name_of(m, head)  # "lm_head" in transformers 5, "embed_out" before
    assert name not in linear_modules(m)
    assert len(linear_modules(m)) == len(NEOX_NAMES)  # the head is the only leaf Linear left out
    assert sum(isinstance(x, torch.nn.Linear) for x in m.modules()) == len(NEOX_NAMES) + 1


def test_different_width_raises_listing_mismatches() -> None:
    with pytest.raises(ValueError) as err:
        candidate_modules(neox(0, hidden=32), neox(1, hidden=48))
    msg = str(err.value)
    assert "shape mismatches (8)" in msg
    for n in NEOX_NAMES:
        assert n in msg
    assert "(96, 32)" in msg and "(144, 48)" in msg  # query_key_value weight shapes of both models


def test_different_depth_keeps_shared_and_check_lists_extra_layer() -> None:
    src, tgt = neox(0, layers=3), neox(1, layers=2)
    assert candidate_modules(src, tgt) == NEOX_NAMES
    with pytest.raises(ValueError, match="only in source \\(4\\)") as err:
        check_compatible(src, tgt)
    assert "gpt_neox.layers.2.mlp.dense_4h_to_h" in str(err.value)
    check_compatible(src, tgt, NEOX_NAMES)  # the shared subset is fine


def test_check_compatible_rejects_unknown_and_non_linear_names() -> None:
    src, tgt = neox(0), neox(1)
    with pytest.raises(ValueError, match="in neither model") as err:
        check_compatible(src, tgt, ["gpt_neox.embed_in", "no.such.module"])
    assert "gpt_neox.embed_in" in str(err.value) and "no.such.module" in str(err.value)

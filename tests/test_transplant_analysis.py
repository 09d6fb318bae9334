"""Activation recorder vs references that do not use hooks; scores and ranking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from grafting.transplant import (
    ActivationRecorder,
    linear_modules,
    rank_modules,
    record_activations,
    score_modules,
)
from grafting.transplant._inputs import position_ids_from_mask

ATOL, RTOL = 1e-5, 1e-4


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    # Default init has zero biases and unit norms; random values make every term of the reference matter.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def neox(seed: int) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        eos_token_id=None,  # keep generation running for a fixed number of steps
    )
    return _randomise(GPTNeoXForCausalLM(cfg), seed)


def gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=None
    )
    return _randomise(GPT2LMHeadModel(cfg), seed)


class _Tap(nn.Module):
    """Wraps a module and keeps its full outputs: a hook-free reference recorder."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.outs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        self.outs.append(y.detach().clone())
        return y


def _tap_all(model: nn.Module, names: list[str]) -> dict[str, _Tap]:
    taps = {}
    for n in names:
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name)
        taps[n] = _Tap(getattr(parent, child))
        setattr(parent, child, taps[n])
    return taps


def _untap(model: nn.Module, taps: dict[str, _Tap]) -> None:
    for n, t in taps.items():
        parent_name, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent_name), child, t.inner)


def _tap_means(taps: dict[str, _Tap]) -> dict[str, float]:
    out = {}
    for n, t in taps.items():
        rows = torch.cat([o[:, -1, :].abs().mean(-1) for o in t.outs])
        out[n] = rows.double().mean().item()
    return out


def _assert_dicts_close(a: dict[str, float], b: dict[str, float]) -> None:
    assert list(a) == list(b)
    for n in a:
        assert a[n] == pytest.approx(b[n], rel=RTOL, abs=ATOL), n


@torch.no_grad()
def test_recorder_matches_hand_forward_from_hidden_states() -> None:
    """qkv, fc-in and fc-out outputs at the last token, recomputed from hidden states with F.* only."""
    m = neox(0)
    ids = torch.randint(0, 128, (3, 7), generator=torch.Generator().manual_seed(1))
    rec = record_activations(m, ids)
    hs = m(ids, output_hidden_states=True).hidden_states
    sd = {k: v for k, v in m.state_dict().items()}
    for i in range(2):
        p = f"gpt_neox.layers.{i}."
        x = hs[i][:, -1, :]  # input of layer i at the last token (parallel residual: both branches read x)
        ln1 = F.layer_norm(x, (32,), sd[p + "input_layernorm.weight"], sd[p + "input_layernorm.bias"], 1e-5)
        ln2 = F.layer_norm(
            x, (32,), sd[p + "post_attention_layernorm.weight"], sd[p + "post_attention_layernorm.bias"], 1e-5
        )
        qkv = F.linear(
            ln1, sd[p + "attention.query_key_value.weight"], sd[p + "attention.query_key_value.bias"]
        )
        h4 = F.linear(ln2, sd[p + "mlp.dense_h_to_4h.weight"], sd[p + "mlp.dense_h_to_4h.bias"])
        out = F.linear(F.gelu(h4), sd[p + "mlp.dense_4h_to_h.weight"], sd[p + "mlp.dense_4h_to_h.bias"])
        for name, y in (
            ("attention.query_key_value", qkv),
            ("mlp.dense_h_to_4h", h4),
            ("mlp.dense_4h_to_h", out),
        ):
            assert rec[p + name] == pytest.approx(y.abs().mean(-1).mean().item(), rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("build", [neox, gpt2], ids=["gptneox-linear", "gpt2-conv1d"])
@torch.no_grad()
def test_recorder_matches_wrapped_module_outputs(build) -> None:
    m = build(0)
    names = list(linear_modules(m))
    batches = [torch.randint(0, 128, (2, n), generator=torch.Generator().manual_seed(n)) for n in (5, 9)]
    rec = record_activations(m, batches)
    taps = _tap_all(m, names)
    for b in batches:
        m(b)
    _untap(m, taps)
    _assert_dicts_close(rec, _tap_means(taps))


# GPT-2 has absolute position embeddings, so it also checks that padded rows get mask-aware positions
# (GPT-NeoX's rotary attention is shift-invariant and would not notice).
@pytest.mark.parametrize("build", [neox, gpt2], ids=["gptneox", "gpt2"])
@torch.no_grad()
def test_left_padding_reads_each_rows_last_token(build) -> None:
    m = build(0)
    a, b = torch.tensor([5, 17, 3, 99, 42]), torch.tensor([7, 8])
    ids = torch.tensor([[5, 17, 3, 99, 42], [0, 0, 0, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    batched = record_activations(m, {"input_ids": ids, "attention_mask": mask})
    alone = [record_activations(m, x) for x in (a, b)]
    _assert_dicts_close(batched, {n: (alone[0][n] + alone[1][n]) / 2 for n in batched})


@pytest.mark.parametrize("padded", [False, True])
@torch.no_grad()
def test_generation_steps_match_cache_free_prefix_forwards(padded: bool) -> None:
    """Cached decoding hooked step by step == full forwards over each prefix, last token of each."""
    m, steps = neox(0), 4
    ids = torch.randint(1, 128, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    if padded:
        ids[1, :2], mask[1, :2] = 0, 0
    batch = {"input_ids": ids, "attention_mask": mask}
    names = list(linear_modules(m))
    with ActivationRecorder(m, names) as rec:
        seq = m.generate(**batch, max_new_tokens=steps, do_sample=False, pad_token_id=0)
    assert seq.shape[1] == ids.shape[1] + steps
    assert set(rec.counts().values()) == {2 * steps}  # prefill + steps-1 decoding forwards, 2 rows each
    assert record_activations(m, batch, generate_steps=steps) == pytest.approx(rec.means(), rel=1e-12)

    taps = _tap_all(m, names)
    for t in range(steps):
        pre = seq[:, : ids.shape[1] + t]
        pmask = torch.cat([mask, torch.ones(2, t, dtype=mask.dtype)], dim=1)
        m(pre, attention_mask=pmask, position_ids=position_ids_from_mask(pmask), use_cache=False)
    _untap(m, taps)
    _assert_dicts_close(rec.means(), _tap_means(taps))


def test_recorder_removes_hooks_and_reports_unused_as_nan() -> None:
    m = neox(0)
    with ActivationRecorder(m) as rec:
        assert all(len(mod._forward_hooks) == 1 for mod in linear_modules(m).values())
    assert all(len(mod._forward_hooks) == 0 for mod in linear_modules(m).values())
    assert all(math.isnan(v) for v in rec.means().values())
    with pytest.raises(ValueError, match="not found"):
        ActivationRecorder(m, ["nope"])


def test_string_prompts_need_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        record_activations(neox(0), ["hello world"])


def test_scores_and_ranking() -> None:
    src = {"a": 1.0, "b": 0.5, "c": 2.0, "d": 3.0}
    tgt = {"a": 0.5, "b": 1.0, "c": 2.0, "d": 1.0}
    assert score_modules(src, tgt) == {"a": 0.5, "b": 0.5, "c": 0.0, "d": 2.0}
    rel = score_modules(src, tgt, "rel_diff", eps=1e-8)
    assert (
        rel["a"] == pytest.approx(1.0) and rel["b"] == pytest.approx(0.5) and rel["d"] == pytest.approx(2.0)
    )
    assert rank_modules(score_modules(src, tgt)) == ["d", "a", "b", "c"]  # a/b tie -> by name
    assert rank_modules({"z": math.nan, "y": 1.0, "x": 1.0}) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="unknown score"):
        score_modules(src, tgt, "cosine")
    with pytest.raises(ValueError, match="only in source"):
        score_modules(src, {"a": 1.0})

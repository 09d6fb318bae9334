"""transplant_ / restore_ / transplanted: exact copies, untouched rest, bit-exact restore, blending."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from grafting.transplant import candidate_modules, restore_, transplant_, transplanted


def neox(seed: int, hidden: int = 32) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=128,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    m = GPTNeoXForCausalLM(cfg).eval()
    with torch.no_grad():  # non-zero biases, so the bias path is exercised
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    return m


def gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    m = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    return m


def _state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _owned(names: list[str]) -> set[str]:
    return {f"{n}.{k}" for n in names for k in ("weight", "bias")}


@pytest.mark.parametrize("build", [neox, gpt2], ids=["gptneox-linear", "gpt2-conv1d"])
def test_transplant_all_copies_exactly_and_restore_is_bit_exact(build) -> None:
    src, tgt = build(0), build(1)
    names = candidate_modules(src, tgt)
    before, src_state = _state(tgt), _state(src)
    saved = transplant_(tgt, src, names)
    after = tgt.state_dict()
    owned = _owned(names)
    assert owned <= set(after)
    for k in after:
        if k in owned:
            assert torch.equal(after[k], src_state[k]), k
            assert not torch.equal(after[k], before[k]), k  # the seeds really differ
        else:
            assert torch.equal(after[k], before[k]), k  # embeddings, norms, head untouched
    restore_(tgt, saved)
    for k, v in tgt.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(torch.equal(v, src_state[k]) for k, v in src.state_dict().items())  # source never written


@torch.no_grad()
def test_all_linears_plus_non_linears_reproduces_source_logits() -> None:
    """Candidates cover every projection: copying the rest by hand makes the target the source."""
    src, tgt = neox(0), neox(1)
    names = candidate_modules(src, tgt)
    transplant_(tgt, src, names)
    rest = {k: v for k, v in src.state_dict().items() if k not in _owned(names)}
    tgt.load_state_dict(rest, strict=False)
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(tgt(ids).logits, src(ids).logits)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.75])
def test_alpha_blend_matches_formula(alpha: float) -> None:
    src, tgt = neox(0), neox(1)
    names = candidate_modules(src, tgt)[:3]
    before, src_state = _state(tgt), _state(src)
    with transplanted(tgt, src, names, alpha=alpha):
        for k in _owned(names):
            expected = (1 - alpha) * before[k] + alpha * src_state[k]
            torch.testing.assert_close(tgt.state_dict()[k], expected, rtol=1e-6, atol=1e-7)
            if alpha == 0.0:
                assert torch.equal(tgt.state_dict()[k], before[k])
    for k, v in tgt.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_context_manager_restores_on_exception() -> None:
    src, tgt = neox(0), neox(1)
    before = _state(tgt)
    with pytest.raises(RuntimeError, match="boom"), transplanted(tgt, src, candidate_modules(src, tgt)):
        raise RuntimeError("boom")
    for k, v in tgt.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bad_requests_fail_before_touching_target() -> None:
    src, tgt, wide = neox(0), neox(1), neox(2, hidden=48)
    before = _state(tgt)
    names = candidate_modules(src, tgt)
    with pytest.raises(ValueError, match="shape mismatches") as err:
        transplant_(tgt, wide, names)
    assert names[0] in str(err.value)
    with pytest.raises(ValueError, match="in neither model"):
        transplant_(tgt, src, [names[0], "gpt_neox.final_layer_norm"])
    with pytest.raises(ValueError, match="duplicate"):
        transplant_(tgt, src, [names[0], names[0]])
    with pytest.raises(ValueError, match="alpha"):
        transplant_(tgt, src, names, alpha=1.5)
    for k, v in tgt.state_dict().items():
        assert torch.equal(v, before[k]), k

"""Apply / unload on a tiny GPTNeoX: bit-exact restore, fingerprint checks, fusion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as tr

from grafting.skillpack.apply import applied, apply_packs_, fuse_sum, unload_
from grafting.skillpack.compressors import decompress
from grafting.skillpack.delta import compute_delta
from grafting.skillpack.pack import FingerprintMismatchError, load_pack, model_fingerprint, save_pack
from grafting.skillpack.policy import compress_delta

CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=256)
SMALL_POLICY = {"attention": {"method": "svd_quant", "rank": 8}, "mlp": {"method": "svd_quant", "beta": 0.5}}


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> tr.GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return tr.GPTNeoXForCausalLM(tr.GPTNeoXConfig(**CONFIG)).to(dtype).eval()


def _tuned(base: torch.nn.Module, seed: int) -> torch.nn.Module:
    tuned = _model(0, next(base.parameters()).dtype)
    tuned.load_state_dict(base.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_((torch.randn(p.shape, generator=gen) * 0.02).to(p.dtype))
    return tuned


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_bit_identical(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    for k, v in snapshot.items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.arange(12).reshape(1, 12)).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_apply_then_unload_is_bit_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    base = _model(dtype=dtype)
    delta = compute_delta(base.state_dict(), _tuned(base, 1).state_dict())
    pack = load_pack(save_pack(compress_delta(delta, SMALL_POLICY), model_fingerprint(base), tmp_path / "p"))
    snapshot, logits = _snapshot(base), _logits(base)
    saved = apply_packs_(base, pack)
    assert set(saved) == set(delta)
    assert not torch.equal(_logits(base), logits)
    unload_(base, saved)
    _assert_bit_identical(base, snapshot)
    assert torch.equal(_logits(base), logits)


def test_applied_weights_equal_base_plus_decompressed() -> None:
    base = _model()
    delta = compute_delta(base.state_dict(), _tuned(base, 1).state_dict())
    compressed = compress_delta(delta, SMALL_POLICY)
    expected = {n: base.state_dict()[n] + decompress(c) for n, c in compressed.items()}
    with applied(base, compressed):
        state = base.state_dict()
        for n, w in expected.items():
            assert torch.equal(state[n], w), n


def test_uncompressed_pack_reproduces_the_tuned_model() -> None:
    base = _model()
    tuned = _tuned(base, 2)
    lossless = {k: "none" for k in ("embedding", "lm_head", "attention", "mlp", "other", "vector")}
    compressed = compress_delta(compute_delta(base.state_dict(), tuned.state_dict()), lossless)
    with applied(base, compressed):
        torch.testing.assert_close(_logits(base), _logits(tuned), rtol=1e-5, atol=1e-5)


def test_context_manager_restores_on_error() -> None:
    base = _model()
    compressed = compress_delta(compute_delta(base.state_dict(), _tuned(base, 1).state_dict()), SMALL_POLICY)
    snapshot = _snapshot(base)
    with pytest.raises(RuntimeError, match="boom"), applied(base, compressed):
        raise RuntimeError("boom")
    _assert_bit_identical(base, snapshot)


def test_pack_on_a_different_base_is_refused(tmp_path: Path) -> None:
    base, other = _model(0), _model(1)
    delta = compute_delta(base.state_dict(), _tuned(base, 1).state_dict())
    path = save_pack(compress_delta(delta, SMALL_POLICY), model_fingerprint(base), tmp_path / "p")
    snapshot = _snapshot(other)
    with pytest.raises(FingerprintMismatchError, match="built for base model"):
        apply_packs_(other, load_pack(path))
    with pytest.raises(FingerprintMismatchError):
        load_pack(path, expected_fingerprint=model_fingerprint(other))
    _assert_bit_identical(other, snapshot)
    with pytest.raises(FingerprintMismatchError):  # a precomputed fingerprint is checked the same way
        apply_packs_(base, load_pack(path), fingerprint=model_fingerprint(other))
    apply_packs_(base, load_pack(path, expected_fingerprint=model_fingerprint(base)))  # the right base is fine


def test_unknown_or_misshapen_names_change_nothing() -> None:
    base = _model()
    compressed = compress_delta(compute_delta(base.state_dict(), _tuned(base, 1).state_dict()), SMALL_POLICY)
    snapshot = _snapshot(base)
    bad = dict(compressed)
    bad["gpt_neox.layers.9.mlp.dense_h_to_4h.weight"] = next(iter(compressed.values()))
    with pytest.raises(KeyError, match="layers.9"):
        apply_packs_(base, bad)
    _assert_bit_identical(base, snapshot)
    misshapen = compress_delta({"gpt_neox.embed_in.weight": torch.ones(3, 3)}, {})
    with pytest.raises(ValueError, match="shape"):
        apply_packs_(base, [compressed, misshapen])
    _assert_bit_identical(base, snapshot)


def test_fuse_sum_is_task_arithmetic_over_packs() -> None:
    base = _model()
    p1 = compress_delta(compute_delta(base.state_dict(), _tuned(base, 1).state_dict()), SMALL_POLICY)
    p2 = compress_delta(compute_delta(base.state_dict(), _tuned(base, 2).state_dict()), SMALL_POLICY)
    fused = fuse_sum([p1, p2], weights=[0.5, -2.0])
    for n in p1:
        torch.testing.assert_close(fused[n], 0.5 * decompress(p1[n]) - 2.0 * decompress(p2[n]))
    snapshot = _snapshot(base)
    with applied(base, [p1, p2], weights=[0.5, -2.0]):
        state = base.state_dict()
        for n, d in fused.items():
            torch.testing.assert_close(state[n], snapshot[n] + d, rtol=0, atol=1e-6)
    _assert_bit_identical(base, snapshot)


def test_tied_weights_get_the_delta_once() -> None:
    torch.manual_seed(0)
    cfg = tr.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=32, n_positions=8, bos_token_id=0, eos_token_id=0)
    model = tr.GPT2LMHeadModel(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    before = model.transformer.wte.weight.detach().clone()
    d = torch.full(before.shape, 0.25)
    pack = compress_delta({"transformer.wte.weight": d, "lm_head.weight": d}, {"embedding": "dense", "lm_head": "dense"})
    saved = apply_packs_(model, pack)
    torch.testing.assert_close(model.lm_head.weight.detach(), before + d)
    unload_(model, saved)
    assert torch.equal(model.transformer.wte.weight, before)

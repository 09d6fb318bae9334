"""Delta computation, the module-kind table on real tiny models, and the module-aware policy."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tr

from grafting.skillpack.compressors import decompress
from grafting.skillpack.delta import add_delta, compute_delta, module_kind
from grafting.skillpack.policy import (
    DEFAULT_POLICY,
    ModuleAwareCompressor,
    compress_delta,
    compression_report,
)


def _tiny(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "gpt_neox":
        return tr.GPTNeoXForCausalLM(tr.GPTNeoXConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                      intermediate_size=64, vocab_size=64))
    if family == "gpt2":
        return tr.GPT2LMHeadModel(tr.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=16,
                                                bos_token_id=0, eos_token_id=0))
    return tr.LlamaForCausalLM(tr.LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                              num_key_value_heads=1, intermediate_size=64, vocab_size=64))


EXPECTED = {
    "gpt_neox": {"gpt_neox.embed_in.weight": "embedding", "lm_head.weight": "lm_head",
                 "gpt_neox.layers.0.attention.query_key_value.weight": "attention",
                 "gpt_neox.layers.0.attention.dense.bias": "attention",
                 "gpt_neox.layers.0.mlp.dense_h_to_4h.weight": "mlp", "gpt_neox.layers.0.mlp.dense_4h_to_h.weight": "mlp",
                 "gpt_neox.layers.0.input_layernorm.weight": "norm",
                 "gpt_neox.layers.0.post_attention_layernorm.bias": "norm", "gpt_neox.final_layer_norm.weight": "norm"},
    "gpt2": {"transformer.wte.weight": "embedding", "transformer.wpe.weight": "embedding", "lm_head.weight": "lm_head",
             "transformer.h.0.attn.c_attn.weight": "attention", "transformer.h.0.attn.c_proj.weight": "attention",
             "transformer.h.0.mlp.c_fc.weight": "mlp", "transformer.h.0.mlp.c_proj.bias": "mlp",
             "transformer.h.0.ln_1.weight": "norm", "transformer.ln_f.bias": "norm"},
    "llama": {"model.embed_tokens.weight": "embedding", "lm_head.weight": "lm_head",
              **{f"model.layers.0.self_attn.{p}_proj.weight": "attention" for p in "qkvo"},
              **{f"model.layers.0.mlp.{p}_proj.weight": "mlp" for p in ("gate", "up", "down")},
              "model.layers.0.input_layernorm.weight": "norm", "model.layers.0.post_attention_layernorm.weight": "norm",
              "model.norm.weight": "norm"},
}


@pytest.mark.parametrize("family", ["gpt_neox", "gpt2", "llama"])
def test_module_kind_on_real_parameter_names(family: str) -> None:
    state = _tiny(family).state_dict()
    for name, kind in EXPECTED[family].items():
        assert name in state, name
        assert module_kind(name, state[name]) == kind, name
    assert all(module_kind(n) != "other" for n in state)  # every parameter of these families is known


def test_module_kind_whole_components_only() -> None:
    assert module_kind("encoder.wte_extra.weight") == "other"
    assert module_kind("x.attention.dense_extra.weight") == "other"
    assert module_kind("classifier.weight") == "other"


def test_compute_delta_float32_drops_zero_and_ints() -> None:
    base = {"a": torch.ones(2, 3, dtype=torch.float16), "b": torch.zeros(4), "ids": torch.arange(3)}
    tuned = {"a": torch.full((2, 3), 1.5, dtype=torch.float16), "b": torch.zeros(4), "ids": torch.arange(3) + 1}
    delta = compute_delta(base, tuned)
    assert list(delta) == ["a"] and delta["a"].dtype == torch.float32
    assert torch.equal(delta["a"], torch.full((2, 3), 0.5))
    assert set(compute_delta(base, tuned, drop_zero=False)) == {"a", "b"}
    with pytest.raises(ValueError, match="missing in tuned"):
        compute_delta(base, {"a": tuned["a"]})
    with pytest.raises(ValueError, match="shape mismatch for a"):
        compute_delta(base, {**tuned, "a": torch.ones(3, 2, dtype=torch.float16)})
    assert torch.equal(add_delta(base, delta)["a"], tuned["a"])


def test_compute_delta_counts_tied_weights_once() -> None:
    base = _tiny("gpt2")
    tuned = _tiny("gpt2")
    with torch.no_grad():
        tuned.transformer.wte.weight.add_(0.01)
    delta = compute_delta(base.state_dict(), tuned.state_dict())
    assert "transformer.wte.weight" in delta and "lm_head.weight" not in delta


def test_policy_routes_each_kind() -> None:
    model = _tiny("gpt_neox")
    gen = torch.Generator().manual_seed(0)
    delta = {n: torch.randn(p.shape, generator=gen) * 1e-2 for n, p in model.state_dict().items()}
    policy = {"attention": {"method": "svd_rank", "rank": 4}, "mlp": {"method": "svd_energy", "params": {"beta": 0.5}}}
    compressed = compress_delta(delta, policy)
    methods = {n: c.meta["method"] for n, c in compressed.items()}
    assert methods["gpt_neox.embed_in.weight"] == "magnitude" == methods["lm_head.weight"]
    assert methods["gpt_neox.layers.0.attention.query_key_value.weight"] == "svd_rank"
    assert methods["gpt_neox.layers.0.attention.query_key_value.bias"] == "dense"  # 1-D -> "vector"
    assert methods["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"] == "svd_energy"
    assert methods["gpt_neox.final_layer_norm.weight"] == "none"
    assert compressed["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"].meta["kind"] == "mlp"
    # norms and biases are exact
    for name in ("gpt_neox.final_layer_norm.bias", "gpt_neox.layers.0.mlp.dense_h_to_4h.bias"):
        assert torch.equal(decompress(compressed[name]), delta[name])
    report = compression_report(delta, compressed)
    assert report["bytes"] == sum(c.nbytes for c in compressed.values()) and report["ratio"] > 1


def test_policy_validates_early() -> None:
    with pytest.raises(ValueError, match="policy.atention"):
        ModuleAwareCompressor({"atention": "dense"})
    with pytest.raises(ValueError, match="policy.mlp"):
        ModuleAwareCompressor({"mlp": {"method": "svd_quant", "rank": 4, "schedule": [[None, 5]]}})
    with pytest.raises(ValueError, match="policy.norm"):
        ModuleAwareCompressor({"norm": {"method": "nope"}})
    assert set(DEFAULT_POLICY) == {"embedding", "lm_head", "attention", "mlp", "norm", "other", "vector"}


def test_policy_accepts_omegaconf() -> None:
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"mlp": {"method": "svd_quant", "beta": 0.8, "schedule": [[2, 8], [None, 2]]}})
    comp = ModuleAwareCompressor(cfg)
    assert comp.compressors["mlp"].params["schedule"] == [[2, 8], [None, 2]]
    c = comp.compress({"model.layers.0.mlp.up_proj.weight": torch.randn(16, 8)})
    json.dumps(c["model.layers.0.mlp.up_proj.weight"].meta)  # meta stays plain JSON

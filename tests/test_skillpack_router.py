"""The router: picks the right pack on separable prompts, routes generation, restores the base, saves safely."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from grafting.errors import ArtifactError
from grafting.generation import generate_continuations
from grafting.skillpack.apply import applied
from grafting.skillpack.pack import SkillPack, model_fingerprint
from grafting.skillpack.policy import compress_delta
from grafting.skillpack.router import PackRouter, prompt_features, routed_generate, train_router

WORDS = ["file", "list", "value", "object", "class", "module", "error", "name", "type", "data"]


def _add_prompts(start: int, n: int) -> list[str]:
    return [f"Question: What is {i % 10} plus {(3 * i) % 10} modulo 4?\nAnswer:" for i in range(start, start + n)]


def _reverse_prompts(start: int, n: int) -> list[str]:
    return [f"Reverse the words: {WORDS[i % 10]} {WORDS[(i + 3) % 10]} {WORDS[(i + 7) % 10]}\nReversed:"
            for i in range(start, start + n)]


def _pack(model: torch.nn.Module, seed: int, fingerprint: str) -> SkillPack:
    """A pack that shifts the output head enough to change greedy generations."""
    g = torch.Generator().manual_seed(seed)
    head = model.get_output_embeddings().weight
    name = next(n for n, p in model.named_parameters() if p is head)
    delta = {name: torch.randn(head.shape, generator=g) * 0.5}
    return SkillPack(compress_delta(delta, {"lm_head": "dense"}), fingerprint)


@pytest.fixture(scope="module")
def setup(tokenizer):
    model = tiny_model("gpt_neox")
    fp = model_fingerprint(model)
    router, stats = train_router(model, tokenizer, {"add": _add_prompts(0, 16), "reverse": _reverse_prompts(0, 16)},
                                 epochs=100, fingerprint=fp)
    return model, fp, router, stats


def test_router_picks_the_right_pack_on_held_out_prompts(setup, tokenizer):
    model, _, router, stats = setup
    assert stats["accuracy"] == 1.0
    prompts = _add_prompts(50, 10) + _reverse_prompts(50, 10)
    picked = [router.names[i] for i in router.predict(prompt_features(model, tokenizer, prompts))]
    assert picked == ["add"] * 10 + ["reverse"] * 10


def test_routed_generation_applies_the_chosen_pack_and_restores_the_base(setup, tokenizer):
    model, fp, router, _ = setup
    packs = {"add": _pack(model, 1, fp), "reverse": _pack(model, 2, fp)}
    prompts = [*_add_prompts(60, 3), *_reverse_prompts(60, 3)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outputs, chosen = routed_generate(model, tokenizer, router, packs, prompts, max_new_tokens=5, fingerprint=fp)
    assert chosen == ["add"] * 3 + ["reverse"] * 3
    for prompt, out, name in zip(prompts, outputs, chosen, strict=True):
        with applied(model, packs[name], fingerprint=fp):
            assert generate_continuations(model, tokenizer, [prompt], 5) == [out]
    # the wrong pack gives other text, so the check above can fail
    with applied(model, packs["reverse"], fingerprint=fp):
        wrong = generate_continuations(model, tokenizer, prompts[:3], 5)
    assert wrong != outputs[:3]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_save_load_round_trip_and_tamper_detection(setup, tokenizer, tmp_path):
    model, fp, router, _ = setup
    router.save(tmp_path / "router")
    loaded = PackRouter.load(tmp_path / "router")
    assert loaded.names == router.names and loaded.base_fingerprint == fp
    feats = prompt_features(model, tokenizer, _add_prompts(70, 4) + _reverse_prompts(70, 4))
    torch.testing.assert_close(loaded(feats), router(feats), rtol=0, atol=0)
    weights = tmp_path / "router" / "router.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        PackRouter.load(tmp_path / "router")


def test_mlp_router_and_bad_labels():
    feats = torch.cat([torch.randn(20, 8) + 3, torch.randn(20, 8) - 3])
    router = PackRouter(["a", "b"], 8, hidden=16)
    assert router.fit(feats, [0] * 20 + [1] * 20, epochs=50)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="labels"):
        router.fit(feats, [0] * 20 + [2] * 20)
    with pytest.raises(ValueError, match="distinct"):
        PackRouter(["a", "a"], 8)

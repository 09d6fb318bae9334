"""The routers: each picks (or mixes) the right packs on separable prompts, routed generation applies them and
restores the base, Arrow's votes equal a direct computation, the learned classifier saves safely."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from grafting.errors import ArtifactError
from grafting.generation import generate_continuations
from grafting.skillpack.apply import applied
from grafting.skillpack.pack import SkillPack, model_fingerprint
from grafting.skillpack.policy import compress_delta
from grafting.skillpack.router import PackRouter, prompt_features
from grafting.skillpack.routers import build_router, routed_generate
from grafting.skillpack.routers.arrow import prototypes

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


PROMPTS = {"add": _add_prompts(0, 16), "reverse": _reverse_prompts(0, 16)}
HELD_OUT = _add_prompts(50, 10) + _reverse_prompts(50, 10)


@pytest.fixture(scope="module")
def setup(tokenizer):
    model = tiny_model("gpt_neox")
    fp = model_fingerprint(model)
    router = build_router("learned", list(PROMPTS), epochs=100)
    stats = router.fit(model, tokenizer, {}, PROMPTS, fingerprint=fp)
    return model, fp, router, stats


def test_router_picks_the_right_pack_on_held_out_prompts(setup, tokenizer):
    model, _, router, stats = setup
    assert stats["accuracy"] == 1.0
    assert router.choose(model, tokenizer, HELD_OUT) == ["add"] * 10 + ["reverse"] * 10


def test_centroid_router_picks_the_right_pack_with_no_gradient_step(setup, tokenizer):
    model = setup[0]
    router = build_router("centroid", list(PROMPTS))
    assert router.fit(model, tokenizer, {}, PROMPTS)["accuracy"] == 1.0
    assert router.choose(model, tokenizer, HELD_OUT) == ["add"] * 10 + ["reverse"] * 10


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


def test_gate_mixes_packs_by_the_learned_softmax(setup, tokenizer):
    model, fp, learned, _ = setup
    gate = build_router("gate", list(PROMPTS), epochs=100, temperature=4.0, top_k=2)
    gate.fit(model, tokenizer, {}, PROMPTS, fingerprint=fp)
    prompts = [*_add_prompts(60, 2), *_reverse_prompts(60, 2)]
    weights = gate.weights(model, tokenizer, prompts)
    expected = torch.softmax(gate.logits(model, tokenizer, prompts) / 4.0, dim=-1)  # top_k = all packs: no mask
    torch.testing.assert_close(weights, expected)
    assert (weights > 0).all() and (weights < 1).all()  # mixed, not picked
    assert gate.choose(model, tokenizer, prompts) == learned.choose(model, tokenizer, prompts)
    top1 = build_router("gate", list(PROMPTS), epochs=100, top_k=1)
    top1.fit(model, tokenizer, {}, PROMPTS)
    assert set(top1.weights(model, tokenizer, prompts).flatten().tolist()) == {0.0, 1.0}
    packs = {"add": _pack(model, 1, fp), "reverse": _pack(model, 2, fp)}
    outputs, _ = routed_generate(model, tokenizer, gate, packs, prompts, max_new_tokens=5, fingerprint=fp, decimals=6)
    for prompt, out, row in zip(prompts, outputs, weights, strict=True):  # each prompt under its own mixture
        w = [round(float(x), 6) for x in row]
        with applied(model, [packs["add"], packs["reverse"]], [x / sum(w) for x in w], fingerprint=fp):
            assert generate_continuations(model, tokenizer, [prompt], 5) == [out]


def test_arrow_prototype_is_the_top_right_singular_vector():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(12, generator=g), torch.randn(7, generator=g)
    u, v = u / u.norm(), v / v.norm()
    delta = 5.0 * torch.outer(u, v) + 0.01 * torch.randn(12, 7, generator=g)
    proto = prototypes(delta)[:, 0]
    assert proto.shape == (7,) and abs(float(proto @ v)) > 0.999


def test_arrow_votes_equal_a_direct_computation(tokenizer):
    model = tiny_model("gpt_neox")
    fp = model_fingerprint(model)
    g = torch.Generator().manual_seed(3)
    names = ["gpt_neox.layers.0.mlp.dense_h_to_4h", "gpt_neox.layers.1.attention.query_key_value"]
    modules = dict(model.named_modules())
    deltas = {p: {f"{n}.weight": torch.randn(modules[n].weight.shape, generator=g) for n in names} for p in "ab"}
    packs = {p: SkillPack(compress_delta(d, {"mlp": "dense", "attention": "dense"}), fp) for p, d in deltas.items()}
    router = build_router("arrow", ["a", "b"])
    assert router.fit(model, tokenizer, packs) == {"modules": 2.0}  # no prompt is needed
    prompts = HELD_OUT[:3] + HELD_OUT[-3:]
    got = router.votes(model, tokenizer, prompts, batch_size=4)

    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}  # the modules' inputs, one prompt at a time
    hooks = [modules[n].register_forward_pre_hook(lambda m, a, n=n: inputs[n].append(a[0][0].detach())) for n in names]
    with torch.no_grad():
        for prompt in prompts:
            model(**tokenizer(prompt, return_tensors="pt"))
    for h in hooks:
        h.remove()
    for i in range(len(prompts)):
        votes = torch.zeros(2)
        for n in names:
            v = torch.stack([torch.linalg.svd(deltas[p][f"{n}.weight"])[2][0] for p in "ab"], dim=1)  # (in, 2)
            proj = (inputs[n][i] @ v).abs()
            votes += (proj / proj.sum(-1, keepdim=True)).mean(0)
        torch.testing.assert_close(got[i], votes / len(names), rtol=1e-4, atol=1e-5)
    assert router.weights(model, tokenizer, prompts).sum(-1).tolist() == [1.0] * len(prompts)


def test_save_load_round_trip_and_tamper_detection(setup, tokenizer, tmp_path):
    model, fp, learned, _ = setup
    learned.save(tmp_path / "router")
    router = learned.classifier
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


def test_a_saved_learned_router_loads_as_the_same_router(setup, tokenizer, tmp_path):
    from grafting.skillpack.routers.learned import Learned

    model, fp, learned, _ = setup
    learned.save(tmp_path / "router")
    loaded = Learned.load(tmp_path / "router")
    assert loaded.fingerprint == fp and loaded.names == learned.names
    torch.testing.assert_close(loaded.logits(model, tokenizer, HELD_OUT), learned.logits(model, tokenizer, HELD_OUT),
                               rtol=0, atol=0)


POOLS = {"a": ["file", "list", "value", "object", "class"], "b": ["module", "error", "name", "type", "data"]}


def _pool_prompts(pack: str, frame: str, start: int, n: int) -> list[str]:
    words = POOLS[pack]
    return [frame.format(words=f"{words[i % 5]} {words[(i + 1) % 5]} {words[(i + 3) % 5]}") for i in range(start, start + n)]


def test_token_vote_routes_content_only_prompts_by_their_words(tokenizer):
    model = tiny_model("gpt_neox")
    # both packs train on the same template: only the words tell them apart
    train = {p: _pool_prompts(p, "Do it: {words}\nDone:", 0, 3) for p in POOLS}
    router = build_router("tokens", list(POOLS), layer=0, token_temperature=0.05)
    assert router.fit(model, tokenizer, {}, train)["accuracy"] == 1.0
    held_out = _pool_prompts("a", "{words}\nAnswer:", 3, 2) + _pool_prompts("b", "{words}\nAnswer:", 3, 2)
    assert router.choose(model, tokenizer, held_out) == ["a", "a", "b", "b"]
    # the votes equal a direct computation over the input embeddings
    emb = model.get_input_embeddings().weight.detach().float()

    def unit(ids: list[int]) -> torch.Tensor:
        return torch.nn.functional.normalize(emb[ids], dim=-1)

    protos = [torch.unique(unit([t for s in train[p] for t in tokenizer(s)["input_ids"]]), dim=0) for p in POOLS]
    tokens = unit(tokenizer(held_out[0])["input_ids"])
    sims = torch.stack([(tokens @ p.T).max(-1).values for p in protos], dim=-1)
    torch.testing.assert_close(router.votes(model, tokenizer, held_out[:1])[0], torch.softmax(torch.logsumexp(sims / 0.05, 0), -1))
    # a prompt of tokens both packs' prompts hold (the template alone) votes flat
    torch.testing.assert_close(router.votes(model, tokenizer, ["Do it:\nDone:"])[0], torch.tensor([0.5, 0.5]))

"""Span grafts (graft.span = m): donor blocks i..i+m-1 in place of host blocks j..j+m-1."""

import pytest
import torch
from conftest import tiny_model
from transformers import AutoModelForCausalLM

from grafting import surgery
from grafting.errors import ConfigError
from grafting.graft.grafted import SkippedBlock, build_grafted, graft_of, load_graft_, save_graft, span_of
from grafting.modules.translator_align import TranslatorAlignModule


@torch.no_grad()
def test_span_of_the_host_itself_is_the_host(family, batch):
    """Host blocks 1..2 grafted back into the host between identity translators: the same logits."""
    host = tiny_model(family, seed=0)
    grafted = build_grafted(host, host, layer=1, dest=1, span=2)
    assert span_of(graft_of(grafted)[1]) == 2 and isinstance(surgery.get_blocks(grafted)[2], SkippedBlock)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    torch.testing.assert_close(grafted(input_ids=ids, attention_mask=mask).logits,
                               host(input_ids=ids, attention_mask=mask).logits)


@torch.no_grad()
def test_span_graft_matches_running_the_donor_blocks_in_sequence(batch):
    """Reference: Post-T(donor[i+1](donor[i](Pre-T(h)))) computed by hand from the host's residual."""
    host, donor = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1)
    grafted = build_grafted(host, donor, layer=0, dest=1, span=2)
    graft = graft_of(grafted)[1]
    torch.nn.init.normal_(graft.post_translator.weight, std=0.2)
    ids = batch["input_ids"]
    captured = {}
    handle = graft.register_forward_pre_hook(
        lambda m, a, kw: captured.update(h=a[0] if a else kw["hidden_states"], kw=dict(kw)), with_kwargs=True)
    out = surgery.residual_before(grafted, ids, 3)  # entering host block 3 = leaving the span
    handle.remove()
    kwargs = dict(captured["kw"])
    h = graft.pre_translator(captured["h"])
    kwargs["position_embeddings"] = graft.rotary(h, position_ids=kwargs.get("position_ids"))
    blocks = surgery.get_blocks(donor)
    by_hand = graft.post_translator(blocks[1](blocks[0](h, **kwargs), **kwargs))
    torch.testing.assert_close(out, by_hand)


@torch.no_grad()
def test_span_graft_generates_with_cache_and_round_trips(family, batch, tmp_path):
    host, donor = tiny_model(family, seed=0), tiny_model(family, seed=1)
    grafted = build_grafted(host, donor, layer=0, dest=1, span=2)
    torch.nn.init.normal_(graft_of(grafted)[1].pre_translator.weight, mean=0.0, std=0.3)
    ids, mask = batch["input_ids"][:1], batch["attention_mask"][:1]
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    cached = grafted.generate(ids, use_cache=True, **kwargs)
    torch.testing.assert_close(cached, grafted.generate(ids, use_cache=False, **kwargs))
    # our format
    save_graft(grafted, tmp_path / "graft", {})
    fresh = build_grafted(host, donor, layer=0, dest=1, span=2)
    load_graft_(fresh, tmp_path / "graft")
    torch.testing.assert_close(fresh(input_ids=ids, attention_mask=mask).logits,
                               grafted(input_ids=ids, attention_mask=mask).logits)
    with pytest.raises(Exception, match="graft.span"):
        load_graft_(build_grafted(host, donor, layer=0, dest=1), tmp_path / "graft")
    # the Hugging Face format
    grafted.save_pretrained(tmp_path / "hf")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert loaded.config.span == 2
    assert torch.equal(loaded.generate(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs), cached)


def test_post_target_runs_the_spanned_host_blocks(batch):
    """Host into itself over a span of 2 with identity translators: Post-T's residual loss is zero."""
    host = tiny_model("gpt_neox", seed=0)
    grafted = build_grafted(host, host, layer=1, dest=1, span=2)
    module = TranslatorAlignModule(grafted, host, host, 1, "post", "residual", "mse")
    assert module.loss(batch).item() < 1e-10
    # with the span's second block changed, the target (the host's) no longer matches
    with torch.no_grad():
        graft_of(grafted)[1].following[0].mlp.dense_4h_to_h.weight.mul_(3.0)
    assert module.loss(batch).item() > 1e-4


def test_span_past_the_last_block_names_the_key():
    host = tiny_model("gpt_neox")
    n = surgery.num_blocks(host)
    with pytest.raises(ConfigError, match="graft.span"):
        build_grafted(host, host, layer=n - 1, dest=0, span=2)
    with pytest.raises(ConfigError, match="graft.span"):
        build_grafted(host, host, layer=0, dest=n - 1, span=2)

"""The grafted model: identity at init, rectangular translators, generation, save/reload."""

import pytest
import torch
from conftest import tiny_model

from grafting import surgery
from grafting.errors import ConfigError
from grafting.graft.grafted import build_grafted, graft_of, load_graft_, save_graft, swap_donor_block_
from grafting.graft.translators import build_translator, rectangular_identity


@pytest.mark.parametrize("translator", ["linear", "affine"])
@torch.no_grad()
def test_identity_graft_reproduces_host(family, batch, translator):
    host = tiny_model(family, seed=0)
    grafted = build_grafted(host, host, layer=1, dest=1, translator=translator)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    torch.testing.assert_close(grafted(input_ids=ids, attention_mask=mask).logits,
                               host(input_ids=ids, attention_mask=mask).logits)


@torch.no_grad()
def test_graft_from_other_model_changes_output(batch):
    host, donor = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1)
    grafted = build_grafted(host, donor, layer=2, dest=1)
    ids = batch["input_ids"]
    assert not torch.allclose(grafted(input_ids=ids).logits, host(input_ids=ids).logits)
    # the host itself is untouched
    assert not any(isinstance(b, type(graft_of(grafted)[1])) for b in surgery.get_blocks(host))


def test_rectangular_identity():
    torch.testing.assert_close(rectangular_identity(3, 5), torch.eye(5)[:3])
    torch.testing.assert_close(rectangular_identity(5, 3)[:3], torch.eye(3))
    assert rectangular_identity(5, 3)[3:].abs().sum() == 0
    x = torch.randn(4, 3)
    up = build_translator("linear", 3, 5)(x)
    torch.testing.assert_close(up[:, :3], x)
    torch.testing.assert_close(build_translator("linear", 5, 3)(up), x)


def test_rectangular_graft_trains(batch):
    """A width-64 donor block grafted into a width-96 host runs forward and backward."""
    host = tiny_model("gpt_neox", seed=0, hidden_size=96, num_attention_heads=4)
    donor = tiny_model("gpt_neox", seed=1)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    _, graft = graft_of(grafted)
    assert graft.pre_translator.weight.shape == (64, 96)
    grafted.requires_grad_(False)
    graft.post_translator.requires_grad_(True)
    opt = torch.optim.Adam(graft.post_translator.parameters(), lr=1e-2)
    ids = batch["input_ids"]
    losses = []
    for _ in range(5):
        loss = grafted(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@torch.no_grad()
def test_grafted_generates_with_cache(family, batch):
    host, donor = tiny_model(family, seed=0), tiny_model(family, seed=1)
    grafted = build_grafted(host, donor, layer=0, dest=2)
    ids = batch["input_ids"][:1]
    cached = grafted.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = grafted.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False, pad_token_id=0)
    torch.testing.assert_close(cached, uncached)


def test_save_and_reload_graft(tmp_path, batch):
    host, donor = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1)
    grafted = build_grafted(host, donor, layer=1, dest=1)
    with torch.no_grad():
        graft_of(grafted)[1].post_translator.weight.add_(0.1)
    save_graft(grafted, tmp_path / "graft", {"note": "test"})
    fresh = build_grafted(host, donor, layer=1, dest=1)
    load_graft_(fresh, tmp_path / "graft")
    ids = batch["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, grafted(input_ids=ids).logits)


@torch.no_grad()
def test_swap_donor_block(batch):
    host, donor, other = (tiny_model("gpt_neox", seed=s) for s in (0, 1, 2))
    grafted = build_grafted(host, donor, layer=1, dest=1)
    ids = batch["input_ids"]
    before = grafted(input_ids=ids).logits
    swap_donor_block_(grafted, surgery.get_blocks(other)[1])
    assert not torch.allclose(grafted(input_ids=ids).logits, before)


def test_validation_errors_name_keys():
    host = tiny_model("gpt_neox")
    with pytest.raises(ValueError, match="graft.layer"):
        build_grafted(host, host, layer=9, dest=0)
    with pytest.raises(ValueError, match="graft.dest"):
        build_grafted(host, host, layer=0, dest=-1)
    unsupported = tiny_model("gpt2")
    unsupported.config.model_type = "bloom"  # a family surgery.ARCHITECTURES does not know
    with pytest.raises(ConfigError, match=r"\[donor\].*bloom"):
        build_grafted(host, unsupported, layer=0, dest=0)

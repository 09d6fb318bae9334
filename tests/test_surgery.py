"""Surgery numerics: truncated forwards against output_hidden_states, block swaps restore exactly."""

import pytest
import torch
from conftest import tiny_model

from grafting import surgery


@torch.no_grad()
def test_truncated_forward_matches_hidden_states(family, batch):
    model = tiny_model(family)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    reference = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    n = surgery.num_blocks(model)
    assert len(reference) == n + 1
    for k in range(n):
        torch.testing.assert_close(surgery.residual_before(model, ids, k, mask), reference[k])
    # hidden_states[n] is taken after the final norm in every family
    last = surgery.residual_before(model, ids, n, mask)
    torch.testing.assert_close(surgery.final_norm(model)(last), reference[n])


@torch.no_grad()
def test_truncated_forward_skips_later_blocks(family, batch):
    model = tiny_model(family)
    calls = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
               for i, b in enumerate(surgery.get_blocks(model))]
    surgery.residual_before(model, batch["input_ids"], 1)
    for h in handles:
        h.remove()
    assert calls == [0]


@torch.no_grad()
def test_residuals_before_several(batch):
    model = tiny_model("gpt_neox")
    ids = batch["input_ids"]
    got = surgery.residuals_before(model, ids, [0, 2])
    torch.testing.assert_close(got[0], surgery.residual_before(model, ids, 0))
    torch.testing.assert_close(got[2], surgery.residual_before(model, ids, 2))


@torch.no_grad()
def test_swapped_block_restores(family, batch):
    model, other = tiny_model(family, seed=0), tiny_model(family, seed=1)
    ids = batch["input_ids"]
    before = model(input_ids=ids).logits
    original = surgery.get_blocks(model)[1]
    with surgery.swapped_block(model, 1, surgery.get_blocks(other)[1]):
        changed = model(input_ids=ids).logits
    assert not torch.allclose(before, changed)
    assert surgery.get_blocks(model)[1] is original
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)


def test_block_index_errors_name_the_key():
    model = tiny_model("gpt_neox")
    with pytest.raises(ValueError, match=r"graft\.layer=7 is out of range"):
        surgery.check_block_index(model, 7, "graft.layer")


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="Unsupported architecture"):
        surgery.architecture(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
def test_embed_narrow_puts_the_narrow_init_inside_the_wide_one(family):
    """Widening by heads: every narrow parameter sits in the leading slice, head by head; the rest is the wide init."""
    narrow = tiny_model(family, seed=0)
    cfg = narrow.config
    heads = cfg.num_attention_heads if family != "gpt2" else cfg.n_head
    d = cfg.hidden_size
    size = {"hidden_size": d * 2, "num_attention_heads": heads * 2} if family != "gpt2" else {"n_embd": d * 2, "n_head": heads * 2}
    if family == "llama":
        size["num_key_value_heads"] = heads * 2
    wide = tiny_model(family, seed=1, **size)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    surgery.embed_narrow_(wide, narrow)
    wide_params = dict(wide.named_parameters())
    for name, small in narrow.named_parameters():
        big = wide_params[name]
        torch.testing.assert_close(big[tuple(slice(0, s) for s in small.shape)], small, rtol=0, atol=0)
        if big.shape != small.shape:  # the added units keep the wide model's own numbers
            assert torch.equal(big.flatten()[-1], before[name].flatten()[-1])
    changed = [n for n, p in narrow.named_parameters() if not torch.equal(before[n][tuple(slice(0, s) for s in p.shape)], p)]
    assert changed, "the wide model's leading slices should have been overwritten"



def test_embed_narrow_refuses_other_head_sizes():
    narrow = tiny_model("gpt_neox", seed=0)
    wide = tiny_model("gpt_neox", seed=1, hidden_size=narrow.config.hidden_size * 2)  # same heads, bigger
    with pytest.raises(ValueError, match="head sizes differ"):
        surgery.embed_narrow_(wide, narrow)

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

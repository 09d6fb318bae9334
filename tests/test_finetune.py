"""Layer fine-tuning: only the chosen block changes, bit for bit."""

import pytest
import torch
from conftest import tiny_model

from grafting import surgery
from grafting.errors import ConfigError
from grafting.modules.layer_finetune import LayerFinetuneModule


def _train(module: LayerFinetuneModule, steps: int = 3) -> None:
    opt = module.configure_optimizers()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(0, 512, (4, 10), generator=g)
        loss = module({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_only_chosen_block_changes(family, method):
    model = tiny_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module = LayerFinetuneModule(model, layer=1, method=method, lr=1e-2, lora_r=4)
    _train(module)
    tuned = module.tuned_model().state_dict()
    prefix = surgery.block_param_prefix(model, 1)
    changed = [k for k in before if not torch.equal(before[k], tuned[k])]
    assert changed, "fine-tuning changed nothing"
    assert all(k.startswith(prefix) for k in changed), f"weights outside block 1 changed: {changed}"
    assert set(tuned) == set(before)
    # the model passed in is never modified
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_method_names_the_key():
    with pytest.raises(ConfigError, match="finetune.method"):
        LayerFinetuneModule(tiny_model("gpt_neox"), layer=0, method="adapter")

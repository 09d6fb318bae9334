"""Several LoRA adapters in one pass against separate peft runs (the LoRA baseline's fast path)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from grafting import surgery
from grafting.modules.skillpack_train import SkillPackTrainModule
from grafting.skillpack.compressors import decompress
from grafting.skillpack.lora import lora_pack
from grafting.skillpack.multi_lora import AdapterSpec, MultiLoraModel, labelled_logits_loss
from grafting.skillpack.multi_lora_train import MultiLoraTrainModule


def _batch(seed: int, rows: int = 4, length: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 512, (rows, length), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100  # answer-only labels
    labels[1, 8:] = -100  # a shorter answer, right-padded as pad_collate pads
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _reseed() -> None:
    torch.manual_seed(123)


def _train(module, batches: list[dict[str, torch.Tensor]], steps: int) -> None:
    config = module.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    for step in range(steps):
        module.training_step(batches[step % len(batches)], step).backward()
        opt.step()
        opt.zero_grad()
        sched.step()


@pytest.fixture(autouse=True)
def _no_lightning_log(monkeypatch):
    for cls in (SkillPackTrainModule, MultiLoraTrainModule):
        monkeypatch.setattr(cls, "log", lambda *a, **k: None)  # no Trainer attached


def _deltas(pack: dict) -> dict[str, torch.Tensor]:
    return {k: decompress(c) for k, c in pack.items()}


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_labelled_logits_loss_equals_the_models_own_loss(family):
    model = tiny_model(family)
    batch = _batch(0)
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    ours = labelled_logits_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    torch.testing.assert_close(ours, own.reshape(1), rtol=1e-6, atol=1e-6)
    # two groups of rows: each group's own mean, not the mean over both
    two = {k: torch.cat([v, _batch(1)[k]]) for k, v in batch.items()}
    second = model(input_ids=two["input_ids"][4:], attention_mask=two["attention_mask"][4:],
                   labels=two["labels"][4:]).loss
    grouped = labelled_logits_loss(model, two["input_ids"], two["attention_mask"], two["labels"], groups=2)
    torch.testing.assert_close(grouped, torch.stack([own, second]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_adapters_in_one_pass_equal_separate_peft_runs(family):
    """Ranks and learning rates of the budget curve, trained together, give each separate run's adapter."""
    model = tiny_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    targets = surgery.architecture(model).lora_targets
    specs = [AdapterSpec(2, 4, 1e-2), AdapterSpec(5, 10, 1e-2), AdapterSpec(2, 4, 3e-3)]
    batches = [_batch(s) for s in range(3)]
    steps = 6
    multi = MultiLoraTrainModule(MultiLoraModel(model, targets, specs, _reseed), warmup_steps=2, max_steps=steps)
    _train(multi, batches, steps)
    for g, spec in enumerate(specs):
        _reseed()
        single = SkillPackTrainModule(model, method="lora", lr=spec.lr, warmup_steps=2, max_steps=steps,
                                      lora_r=spec.rank, lora_alpha=int(spec.alpha))
        _train(single, batches, steps)
        expected, got = _deltas(lora_pack(single.model, "float32")), _deltas(multi.model.pack(g, "float32"))
        assert got.keys() == expected.keys()
        for name, delta in expected.items():
            assert delta.abs().max() > 1e-4  # trained, not still at B = 0
            torch.testing.assert_close(got[name], delta, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the base is never touched


def test_an_adapter_does_not_depend_on_its_neighbours():
    """Adapter 0 trained alone or beside another (another rank and rate) ends bit-for-bit the same."""
    model = tiny_model("gpt_neox")
    targets = surgery.architecture(model).lora_targets
    batches = [_batch(s) for s in range(2)]
    packs = []
    for specs in ([AdapterSpec(3, 6, 1e-2)], [AdapterSpec(3, 6, 1e-2), AdapterSpec(7, 14, 3e-2)]):
        multi = MultiLoraTrainModule(MultiLoraModel(model, targets, specs, _reseed), warmup_steps=1, max_steps=4)
        _train(multi, batches, 4)
        packs.append(_deltas(multi.model.pack(0, "float32")))
    for name, delta in packs[0].items():
        torch.testing.assert_close(packs[1][name], delta, rtol=1e-5, atol=1e-7)


def test_multi_lora_refuses_conv1d_and_empty_specs():
    with pytest.raises(ValueError, match="at least one"):
        MultiLoraModel(tiny_model("gpt_neox"), ("dense",), [], _reseed)
    with pytest.raises(TypeError, match="nn.Linear only"):
        MultiLoraModel(tiny_model("gpt2"), surgery.architecture(tiny_model("gpt2")).lora_targets,
                       [AdapterSpec(2, 4, 1e-3)], _reseed)

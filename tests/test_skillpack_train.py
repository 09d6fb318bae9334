"""SkillPackTrainModule (SFT, DPO, full vs LoRA) and LoRA packs against peft's own merge."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_model

from grafting import surgery
from grafting.data.preference import PreferenceDataset, preference_collate
from grafting.modules.skillpack_train import SkillPackTrainModule, dpo_loss, sequence_logprob
from grafting.skillpack.apply import applied
from grafting.skillpack.compressors import decompress
from grafting.skillpack.delta import add_delta
from grafting.skillpack.lora import lora_pack, lora_values_per_rank, rank_for_bytes
from grafting.stages.skill_learning import skill_delta


def _batch(seed: int = 0, rows: int = 4, length: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 512, (rows, length), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # answer-only labels, as in task SFT
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _steps(module: SkillPackTrainModule, batches: list[dict[str, torch.Tensor]]) -> None:
    opt = module.configure_optimizers()["optimizer"]
    for b in batches:
        module.training_step(b, 0).backward()
        opt.step()
        opt.zero_grad()


@pytest.fixture(autouse=True)
def _no_lightning_log(monkeypatch):
    monkeypatch.setattr(SkillPackTrainModule, "log", lambda *a, **k: None)  # no Trainer attached


def test_full_delta_rebuilds_the_tuned_model_and_leaves_the_input_alone():
    model = tiny_model("gpt_neox")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module = SkillPackTrainModule(model, method="full", lr=1e-2, warmup_steps=1, max_steps=3)
    _steps(module, [_batch(0), _batch(1)])
    delta = skill_delta(module)
    assert delta and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    rebuilt = add_delta(before, delta)
    for k, v in module.model.state_dict().items():
        torch.testing.assert_close(rebuilt[k], v, rtol=0, atol=1e-6)
    # weight decay 0: embedding rows of tokens never seen keep a delta of exactly zero
    emb = delta["gpt_neox.embed_in.weight"]
    seen = torch.cat([_batch(0)["input_ids"], _batch(1)["input_ids"]]).unique()
    unseen = torch.ones(emb.shape[0], dtype=torch.bool)
    unseen[seen] = False
    assert not emb[unseen].any() and emb[seen].any()


def test_dpo_loss_is_log2_at_the_reference_and_drops_when_chosen_gains():
    zeros = torch.zeros(3)
    assert float(dpo_loss(zeros, zeros, zeros, zeros, beta=0.1)) == pytest.approx(math.log(2))
    better = dpo_loss(torch.full((3,), 2.0), zeros, zeros, zeros, beta=0.5)
    assert float(better) < math.log(2)


def test_dpo_step_raises_the_chosen_margin(tokenizer):
    model = tiny_model("gpt_neox")
    prompts = [f"Question {i} plus {i + 1}?\nAnswer:" for i in range(8)]
    data = PreferenceDataset(prompts, [" The result is 1"] * 8, [" banana"] * 8, tokenizer)
    batch = preference_collate(tokenizer.pad_token_id)(data.items)
    module = SkillPackTrainModule(model, lr=5e-3, warmup_steps=1, max_steps=5, dpo_weight=1.0, dpo_beta=0.5)
    assert module.reference is not None and not any(p.requires_grad for p in module.reference.parameters())

    def margin() -> float:
        with torch.no_grad():
            c = sequence_logprob(module.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
            r = sequence_logprob(module.model, batch["rejected_input_ids"], batch["rejected_attention_mask"],
                                 batch["rejected_labels"])
        return float((c - r).mean())

    start = margin()
    _steps(module, [batch] * 4)
    assert margin() > start
    with torch.no_grad():
        assert float(module._dpo(batch)) < math.log(2)


def test_preference_pairs_drop_equal_answers(tokenizer):
    data = PreferenceDataset(["a:", "b:"], [" x", " y"], [" x", " z"], tokenizer)
    assert len(data) == 1


@pytest.mark.parametrize("family", ["gpt_neox", "gpt2"])
def test_lora_pack_equals_peft_merge(family):
    model = tiny_model(family)
    module = SkillPackTrainModule(model, method="lora", lr=1e-2, lora_r=3, lora_alpha=6, warmup_steps=1, max_steps=2)
    with torch.no_grad():  # peft starts B at zero; make the adapter non-trivial
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    pack = lora_pack(module.model, dtype="float32")
    merged = module.tuned_model()
    ids = torch.arange(12).reshape(1, 12)
    with torch.no_grad(), applied(model, pack, check_fingerprints=False):
        got = model(ids).logits
    with torch.no_grad():
        want = merged(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert all(c.meta["method"] == "lora" and c.meta["rank"] == 3 for c in pack.values())
    name = next(iter(pack))
    assert decompress(pack[name]).shape == dict(model.named_parameters())[name].shape


def test_rank_for_bytes_hits_the_budget():
    model = tiny_model("gpt_neox")
    targets = surgery.architecture(model).lora_targets
    per_rank = lora_values_per_rank(model, targets) * 2  # float16
    assert rank_for_bytes(per_rank * 7, model, targets, "float16") == 7
    assert rank_for_bytes(per_rank * 7 + per_rank // 3, model, targets, "float16") == 7
    assert rank_for_bytes(1, model, targets) == 1

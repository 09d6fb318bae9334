"""The LoRA baseline's adapters trained side by side (one forked pass per thread) equal one pass of them all."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config, tiny_model

from grafting.run_context import RunContext
from grafting.stages import skillpack_budgets
from grafting.stages.skill_learning import Distilled

PAIRS = [(2, 1e-2), (4, 1e-2), (8, 3e-3)]


def test_adapter_groups_deal_every_pair_once():
    assert skillpack_budgets.adapter_groups(PAIRS, 2) == [[(2, 1e-2), (8, 3e-3)], [(4, 1e-2)]]
    assert skillpack_budgets.adapter_groups(PAIRS, 1) == [PAIRS]
    assert skillpack_budgets.adapter_groups(PAIRS[:1], 4) == [PAIRS[:1]]  # no empty group


def _train(tmp_path, tokenizer, monkeypatch, workers: int) -> dict:
    monkeypatch.setattr(skillpack_budgets, "workers_for", lambda n, device: min(n, workers))
    cfg = compose_config(["stage=skillpack", "debug=smoke", "logger=none", "skill.target_sft.batch_size=4"],
                         tmp_path / f"w{workers}")
    ctx = RunContext(cfg=cfg, run_dir=tmp_path / f"w{workers}" / "run", loggers=[])
    prompts = [f"Add {a} and {a + 3}. Answer:" for a in range(12)]
    data = Distilled("modadd", prompts, [f" {2 * a + 3}" for a in range(12)], None, {})
    target = tiny_model("gpt_neox", seed=0)
    return skillpack_budgets.train_adapters_side_by_side(ctx, target, tokenizer, data, PAIRS, 2, 6, "lora")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="side by side needs fork")
def test_side_by_side_equals_one_pass(tmp_path, tokenizer, monkeypatch):
    one = _train(tmp_path, tokenizer, monkeypatch, 1)
    two = _train(tmp_path, tokenizer, monkeypatch, 2)
    assert set(one) == set(two) == set(PAIRS)
    moved = 0.0
    for pair in PAIRS:
        assert set(one[pair]) == set(two[pair])
        for name, factors in one[pair].items():
            for part in ("A", "B"):
                a, b = factors.tensors[part].float(), two[pair][name].tensors[part].float()
                torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
                moved += float(a.abs().sum())
    assert moved > 0  # the adapters were trained (B starts at zero)
    # each group kept its own checkpoints, so resume=true continues the same group
    folders = {p.name for p in (tmp_path / "w2" / "run" / "checkpoints").iterdir()}
    assert folders == {"lora_r2-lr0.01_r8-lr0.003_modadd", "lora_r4-lr0.01_modadd"}, folders

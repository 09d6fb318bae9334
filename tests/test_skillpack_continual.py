"""Continual learning with SkillPacks on tiny random models: after C, A with its pack is exactly A after A."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config, tiny_model

from grafting.data.skill_tasks import build_skill
from grafting.evaluation.skill_eval import evaluate_skill
from grafting.plain import plain
from grafting.run_context import RunContext
from grafting.skillpack.delta import add_delta
from grafting.stages import skillpack_continual
from grafting.stages.skill_learning import skill_delta

TINY = ["debug=smoke", "logger=none", "task.operand_max=20", "task.test_size=8", "skill.n_test=6",
        "skill.n_train=16", "skill.source_sft.n_train=16", "skill.source_sft.steps=2", "skill.target_sft.steps=2",
        "skill.source_sft.lr=5e-3", "skill.target_sft.lr=5e-3", "skillpack.fusion.router.n_train=8",
        "skillpack.fusion.router.epochs=30"]


def _run(tmp_path, tokenizer, names: list[str]) -> tuple[dict, torch.nn.Module]:
    cfg = compose_config(["stage=skillpack_continual", f"continual.tasks=[{','.join(names)}]", *TINY], tmp_path)
    ctx = RunContext(cfg=cfg, run_dir=tmp_path / "run", loggers=[])
    tasks = {n: build_skill(n, plain(cfg.skill.tasks)) for n in names}
    target, source = tiny_model("gpt_neox", seed=0), tiny_model("gpt_neox", seed=1, num_hidden_layers=2)
    res = skillpack_continual.continual(ctx, target, tokenizer, source, tokenizer, tasks, names)
    return res, target


def test_packs_never_forget_and_sequential_finetuning_moves(tmp_path, tokenizer):
    names = ["modadd", "modadd7", "reverse"]
    res, target = _run(tmp_path, tokenizer, names)
    assert res["base_unchanged"]
    assert res["no_forgetting"] == dict.fromkeys(names, True)
    a = names[0]
    assert [row[a] for row in res["packs_by_step"].values()] == [res["right_after"][a]["score"]] * 3
    assert res["final_with_pack"][a]["score"] == res["right_after"][a]["score"]
    # the comparison is sensitive: A's pack changes what the base generates
    base_out = evaluate_skill(target, tokenizer, build_skill(a, plain(compose_config(
        ["stage=skillpack_continual", *TINY], tmp_path).skill.tasks)), n_points=6, max_new_tokens=6)["outputs"]
    assert res["_outputs"]["right_after"][a] != base_out
    assert (tmp_path / "run" / "packs" / a / "graftllm" / "manifest.json").is_file()
    assert (tmp_path / "run" / "router" / "router.json").is_file()


def test_a_leaky_base_is_caught(tmp_path, tokenizer, monkeypatch):
    """Negative control: if training leaked into the base, the invariant check must report it."""
    real = skillpack_continual.train_target

    def leaky(ctx, model, tokenizer, data, **kwargs):
        module = real(ctx, model, tokenizer, data, **kwargs)
        with torch.no_grad():
            for k, v in add_delta(model.state_dict(), skill_delta(module)).items():
                model.state_dict()[k].copy_(v)
        return module

    monkeypatch.setattr(skillpack_continual, "train_target", leaky)
    res, _ = _run(tmp_path, tokenizer, ["modadd", "reverse"])
    assert not res["base_unchanged"]
    assert not all(res["no_forgetting"].values())


@pytest.mark.parametrize("bad", [["modadd"], ["modadd", "modadd"]])
def test_needs_two_distinct_tasks(tmp_path, bad):
    from grafting.errors import ConfigError

    cfg = compose_config(["stage=skillpack_continual", f"continual.tasks=[{','.join(bad)}]", *TINY], tmp_path)
    with pytest.raises(ConfigError, match="continual.tasks"):
        skillpack_continual.run(cfg)

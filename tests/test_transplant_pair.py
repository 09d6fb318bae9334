"""The transplant models' recipe: which facts each model sees, the SFT mix, the cache key, tiny training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from grafting.models.loading import build_random
from grafting.models.tokenizer import builtin_tokenizer
from grafting.pretraining.transplant_pair import (
    PairRecipe,
    fact_task,
    instruct_examples,
    known_facts,
    load_role,
    mixture,
    role_path,
)
from grafting.stages.transplant import recipe_from_config
from grafting.transplant import candidate_modules


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> PairRecipe:
    cfg = compose_config(["stage=transplant"], tmp_path_factory.mktemp("cfg"))
    return recipe_from_config(cfg)


def test_default_recipe_has_70_candidates_and_a_64_fact_table(recipe):
    task = fact_task(recipe)
    facts = task.split("test")
    assert len(facts) == 64 and task.split("train") == facts  # every fact is tested
    assert sorted(ex.a for ex in facts) == list(range(64)) and {ex.answer for ex in facts} <= set(range(10))
    assert len({ex.answer for ex in facts}) > 5  # arbitrary values, not one constant
    assert facts[0].prompt + facts[0].completion == f"Question: What is the code of {facts[0].a}?\nAnswer: " \
                                                   f"The result is {facts[0].answer}"
    model = build_random(recipe.arch, 0)
    assert len(candidate_modules(model, model)) == 10 * 7


def test_predecessor_knows_a_fraction_of_the_facts(recipe):
    known = known_facts(recipe)
    assert len(known) == 32 and known == fact_task(recipe).split("test")[:32]
    assert len(known_facts(dataclasses.replace(recipe, known_fraction=0.25))) == 16


def test_mixture_is_the_corpus_chunks_plus_each_fact_repeats_times(recipe):
    tokenizer = builtin_tokenizer(4096)
    facts = fact_task(recipe).split("test")[:3]
    data = mixture(facts, 2, tokenizer, 32)
    text, task = data.datasets
    assert len(task) == 6 and len(data) == len(text) + 6
    row = task[0]
    answer = tokenizer(facts[0].completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert row["labels"][row["labels"] != -100].tolist() == answer  # loss on the answer only


def test_instruct_mix_has_every_fact_and_both_word_tasks(recipe):
    examples = instruct_examples(recipe)
    prompts = [ex.prompt for ex in examples]
    n_words = recipe.instruct["word_examples"]
    assert sum(p.startswith("Reverse the words") for p in prompts) == n_words
    assert sum(p.startswith("Repeat the words") for p in prompts) == n_words
    facts = fact_task(recipe).split("test")
    assert sum(p.startswith("Question:") for p in prompts) == len(facts) * recipe.instruct["fact_repeats"]


def test_cache_key_follows_only_the_phases_a_role_depends_on(recipe):
    roles = ("pretrained", "continued", "predecessor", "successor", "instruct")
    assert all(recipe.key(r) == PairRecipe.from_dict(dataclasses.asdict(recipe)).key(r) for r in roles)
    assert len({recipe.key(r) for r in roles}) == len(roles)
    other = dataclasses.replace(recipe, known_fraction=0.4)
    assert all(recipe.key(r) != other.key(r) for r in roles)
    longer = dataclasses.replace(recipe, successor={**recipe.successor, "steps": recipe.successor["steps"] + 1})
    changed = {r for r in roles if recipe.key(r) != longer.key(r)}
    assert changed == {"continued", "successor"}  # the predecessor and instruct do not depend on it
    sft = dataclasses.replace(recipe, instruct={**recipe.instruct, "lr": 1e-4})
    assert {r for r in roles if recipe.key(r) != sft.key(r)} == {"instruct"}


@pytest.mark.slow  # a whole stage at smoke size (about 30 s); CI runs it with the others
def test_tiny_roles_train_cache_and_share_the_architecture(tmp_path):
    cfg = compose_config(["stage=transplant", "transplant.models.arch.num_hidden_layers=1",
                          "transplant.models.pretrain.steps=2", "transplant.models.successor.steps=2",
                          "transplant.models.instruct.steps=2", "transplant.models.instruct.word_examples=4",
                          "transplant.models.pretrain.fact_repeats=1", "transplant.models.successor.fact_repeats=1",
                          "transplant.models.task.n_keys=4"], tmp_path)
    recipe = recipe_from_config(cfg)
    assert OmegaConf.to_container(cfg.transplant.models, resolve=True)["known_fraction"] == recipe.known_fraction
    models = {role: load_role(recipe, role, tmp_path)[0] for role in ("predecessor", "successor", "instruct")}
    for role in ("pretrained", "continued", *models):
        assert (role_path(recipe, role, tmp_path) / "train_report.json").is_file()
    base = models["predecessor"].state_dict()
    for role in ("successor", "instruct"):
        other = models[role].state_dict()
        assert other.keys() == base.keys()
        assert any(not torch.equal(base[k], other[k]) for k in base)  # trained on from the predecessor
    again = load_role(recipe, "predecessor", tmp_path)[0].state_dict()  # read back from the cache
    assert all(torch.equal(base[k], again[k]) for k in base)

"""Word-order skills on disjoint pools, asked in three wordings (issue 30: routing by content)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import compose_config

from grafting.data.skill_example import Worded, wordings
from grafting.data.skill_tasks import build_skill
from grafting.data.words import CONTENT_FRAME, MODES, N_POOLS, WORDS, WordOrderSkill, pool_words
from grafting.errors import ConfigError
from grafting.plain import plain


def test_pools_are_disjoint_single_tokens():
    from transformers import AutoTokenizer

    import grafting

    # the shipped pair's tokenizer, which every SkillPack target here uses
    tokenizer = AutoTokenizer.from_pretrained(Path(grafting.__file__).parent / "assets" / "tiny-host")
    pools = [pool_words(k) for k in range(N_POOLS)]
    words = [w for pool in pools for w in pool]
    assert len(words) == len(set(words)) == N_POOLS * 16
    assert pool_words(None) == WORDS
    # one token each (with its leading space), as the prompts tokenize them
    assert [w for w in words if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) != 1] == []


@pytest.mark.parametrize("mode,expected", [("reverse", "c b a"), ("copy", "a b c"), ("sort", "a b c"),
                                           ("rotate", "b c a"), ("sort_desc", "c b a")])
def test_every_mode_answers_by_its_rule(mode, expected):
    assert " ".join(WordOrderSkill("t", mode=mode).answer(["b", "c", "a"] if "sort" in mode else ["a", "b", "c"])) \
        == expected


def test_the_three_wordings_ask_the_same_problems():
    task = WordOrderSkill("t", mode="rotate", pool=3, test_size=300, val_size=300)
    template, para, content = (task.worded("test", w) for w in ("template", "paraphrase", "content"))
    assert [ex.answer for ex in template] == [ex.answer for ex in para] == [ex.answer for ex in content]
    assert template == task.split("test") and [ex.prompt for ex in para] == task.router_prompts("test")
    words = template[0].answer.split()
    assert content[0].prompt == CONTENT_FRAME.format(words=" ".join([words[-1], *words[:-1]]))
    # content prompts of different skills share every token but the words; the words come from the skill's pool
    other = WordOrderSkill("u", mode="reverse", pool=0, test_size=300, val_size=300).worded("test", "content")
    pattern = re.compile(r"\b(" + "|".join(pool_words(3) + pool_words(0)) + r")\b")
    assert {pattern.sub("", ex.prompt) for ex in content + other} == {CONTENT_FRAME.format(words="  ")}
    assert set(" ".join(ex.answer for ex in content).split()) <= set(pool_words(3))
    view = Worded(task, "content")
    assert view.split("test") == content and view.name == "t" and wordings(task) == ("template", "paraphrase",
                                                                                        "content")


def test_experiment_skills_have_enough_training_triples(tmp_path):
    cfg = compose_config(["experiment=skillpack_content"], tmp_path)
    names = [cfg.skill.task, *cfg.skill.fuse]
    assert len(names) == 5 and {build_skill(n, plain(cfg.skill.tasks)).mode for n in names} == set(MODES)
    for name in names:
        task = build_skill(name, plain(cfg.skill.tasks))
        assert len(task.split("train")) >= int(cfg.skill.source_sft.n_train) + int(cfg.skill.n_train)
    pools = [build_skill(n, plain(cfg.skill.tasks)).pool for n in names]
    assert sorted(pools) == list(range(N_POOLS))


def test_bad_pool_names_the_key():
    with pytest.raises(ConfigError, match=r"skill.tasks.t.pool"):
        WordOrderSkill("t", pool=N_POOLS)
    with pytest.raises(ConfigError, match=r"skill.tasks.t.vocab_size"):
        WordOrderSkill("t", pool=0, vocab_size=17)

"""The skill task registry: splits, prompts that differ per task, and scores."""

from __future__ import annotations

import pytest

from grafting.data.modular import ModularAddition
from grafting.data.skill_tasks import SkillExample, build_skill, template_regex
from grafting.data.words import WordOrderSkill
from grafting.errors import ConfigError
from grafting.evaluation.task_eval import answer_line
from grafting.metrics.task import score_task

TASKS = {
    "modadd": {"kind": "modadd", "n": 4, "operand_max": 30, "test_size": 50, "val_size": 40},
    "modadd7": {"kind": "modadd", "n": 7, "operand_max": 30, "test_size": 50, "split_seed": 1, "val_size": 40,
                "prompt_template": "Compute ({a} + {b}) mod {n}.\nResult:", "answer_template": " It equals {x}"},
    "reverse": {"kind": "reverse", "n_words": 3, "vocab_size": 12, "test_size": 50, "val_size": 50},
    "copy": {"kind": "reverse", "mode": "copy", "n_words": 2, "vocab_size": 12, "test_size": 20, "val_size": 20},
    "sort": {"kind": "reverse", "mode": "sort", "n_words": 3, "vocab_size": 12, "test_size": 30, "val_size": 30,
             "prompt_template": "Sort the words: {words}\nSorted:"},
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_are_disjoint_and_answers_match(name):
    task = build_skill(name, TASKS)
    train, val, test = task.split("train"), task.split("val"), task.split("test")
    assert len(test) == TASKS[name]["test_size"] and len(val) == TASKS[name]["val_size"] and train
    prompts = [{ex.prompt for ex in rows} for rows in (train, val, test)]
    assert not prompts[0] & prompts[1] and not prompts[0] & prompts[2] and not prompts[1] & prompts[2]
    perfect = task.score([ex.completion for ex in test], test)
    assert perfect["score"] == 1.0
    wrong = task.score(["nothing"] * len(test), test)  # no number, no task word: every metric is 0
    assert wrong == {**{k: 0.0 for k in wrong if k != "n"}, "n": len(test)} and wrong["score"] == 0.0


def test_prompts_tell_the_tasks_apart():
    first = {name: build_skill(name, TASKS).split("test")[0].prompt for name in TASKS}
    assert first["modadd"].startswith("Question:") and first["modadd7"].startswith("Compute (")
    assert first["reverse"].startswith("Reverse the words:")


def test_modadd_default_scores_equal_score_task():
    task = build_skill("modadd", TASKS)
    examples = task.split("test")[:6]
    outputs = [" The result is 1", "The result is 3.", " 2", "", " The result is -1 ", " 7\nand 8"]
    ours = task.score(outputs, examples)
    ref = score_task([answer_line(o) for o in outputs], [ex.answer for ex in examples])
    assert {k: ours[k] for k in ("f_H", "f_S", "fact")} == {k: ref[k] for k in ("f_H", "f_S", "fact")}
    assert ours["score"] == pytest.approx((ref["f_H"] + ref["f_S"] + ref["fact"]) / 3)


def test_template_regex_follows_the_answer_template():
    assert template_regex(ModularAddition.answer_template).fullmatch("The result is 12")
    rx = template_regex(" It equals {x}")
    assert rx.fullmatch("It equals 5") and not rx.fullmatch("The result is 5")


def test_reverse_scores_positions():
    task = WordOrderSkill("r", n_words=3, vocab_size=10, test_size=5)
    ex = SkillExample("p", " c b a", "c b a")
    assert task.score([" c b a"], [ex]) == {"exact": 1.0, "words": 1.0, "score": 1.0, "n": 1}
    assert task.score([" c b a\nmore words"], [ex])["exact"] == 1.0  # only the answer line counts
    half = task.score([" c x a"], [ex])
    assert half["exact"] == 0.0 and half["words"] == pytest.approx(2 / 3)
    assert task.example(("a", "b", "c")).completion == " c b a"


@pytest.mark.parametrize("tasks,key", [
    ({"x": {"kind": "modadd"}}, "skill.task"),
    ({"modadd": {"kind": "sorting"}}, "skill.tasks.modadd.kind"),
    ({"modadd": {"kind": "modadd", "n": 1}}, "skill.tasks.modadd.n"),
    ({"modadd": {"kind": "reverse", "mode": "shuffle"}}, "skill.tasks.modadd.mode"),
    ({"modadd": {"kind": "reverse", "colour": 1}}, "skill.tasks.modadd"),
])
def test_bad_task_config_names_the_key(tasks, key):
    with pytest.raises(ConfigError) as err:
        build_skill("modadd", tasks)
    assert err.value.key == key


def test_sort_answers_in_alphabetical_order():
    task = build_skill("sort", TASKS)
    ex = task.example(("value", "file", "list"))
    assert ex.prompt == "Sort the words: value file list\nSorted:" and ex.completion == " file list value"


@pytest.mark.parametrize("name", ["modadd", "reverse", "copy", "sort"])
def test_router_prompts_share_one_cue_and_never_the_training_template(name):
    task = build_skill(name, TASKS)
    paraphrased, canonical = task.router_prompts("test"), task.split("test")
    assert len(paraphrased) == len(canonical) and all(p.endswith("\nAnswer:") for p in paraphrased)
    train_heads = {ex.prompt.split(":")[0] for ex in task.split("train")}
    assert not any(p.split(":")[0] in train_heads for p in paraphrased)


@pytest.mark.parametrize("name", ["modadd", "reverse", "copy", "sort"])
def test_training_paraphrases_never_use_the_held_out_wording(name):
    task = build_skill(name, TASKS)
    held_out = {p.split("\n")[0].split(":")[0].split(" ")[0] for p in task.router_prompts("test")}
    for split in ("train", "val"):
        worded = task.router_prompts(split)
        assert len(worded) == len(task.split(split))
        heads = {p.split(" ")[0] for p in worded}
        assert len(heads) >= 3 and not heads & held_out, (heads, held_out)  # several wordings, none held out
        assert {p.rsplit("\n", 1)[1] for p in worded} >= {"Answer:", "Output:"}  # no single cue


def test_on_split_scores_validation_as_test():
    from grafting.data.skill_example import OnSplit

    task = build_skill("reverse", TASKS)
    assert OnSplit(task, "val").split("test") == task.split("val") and OnSplit(task, "val").name == "reverse"

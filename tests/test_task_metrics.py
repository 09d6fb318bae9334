"""Modular-addition metrics: edge cases from the paper's definitions plus Hypothesis properties."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grafting.metrics.task import factual, first_number, format_hard, format_soft, score_task


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The result is 3", 3),
        ("The result is -3", -3),
        ("-12 then 4", -12),
        ("a 7b 8", 7),
        ("no digits here", None),
        ("", None),
        ("  \n 42\t", 42),
        ("x=007", 7),
        ("3.5", 3),
        ("2-3", 2),
        ("minus - 5", 5),  # a detached minus sign is not part of the number
    ],
)
def test_first_number(text: str, expected: int | None) -> None:
    assert first_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The result is 3", True),
        ("The result is -3", True),
        ("  The result is 12 \n", True),  # surrounding whitespace is stripped
        ("The result is 3.", False),  # trailing period fails hard
        ("The result is 3 ", True),
        ("The result is  3", False),
        ("the result is 3", False),
        ("The result is three", False),
        ("The result is", False),
        ("The result is 3 and 4", False),
        ("Answer: The result is 3", False),
        ("The result is 3\nThe result is 3", False),
        ("The result is +3", False),
        ("The result is ٣", False),  # Arabic-Indic digit: numbers are ASCII only
    ],
)
def test_format_hard(text: str, expected: bool) -> None:
    assert format_hard(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The result is 3.", True),
        ("-3", True),
        ("It is 3, I think", True),
        ("3 + 1", False),
        ("3.5", False),  # two digit runs: two numbers
        ("nothing", False),
        ("", False),
        ("10 20 30", False),
    ],
)
def test_format_soft(text: str, expected: bool) -> None:
    assert format_soft(text) is expected


@pytest.mark.parametrize(
    ("text", "answer", "expected"),
    [
        ("The result is 2", 2, True),
        ("The result is -2", 2, False),
        ("The result is -2", -2, True),
        ("2 or 3", 2, True),
        ("3 or 2", 2, False),
        ("no number", 0, False),
        ("The result is 02", 2, True),
    ],
)
def test_factual(text: str, answer: int, expected: bool) -> None:
    assert factual(text, answer) is expected


def test_score_task_means() -> None:
    outputs = ["The result is 1", "The result is 2.", "5 and 6", "nothing", "  The result is -3 "]
    answers = [1, 2, 6, 0, -3]
    hard = [True, False, False, False, True]
    soft = [True, True, False, False, True]
    fact = [True, True, False, False, True]
    scores = score_task(outputs, answers)
    assert scores["n"] == 5
    assert scores["f_H"] == pytest.approx(sum(hard) / 5)
    assert scores["f_S"] == pytest.approx(sum(soft) / 5)
    assert scores["fact"] == pytest.approx(sum(fact) / 5)


def test_score_task_empty_and_mismatch() -> None:
    scores = score_task([], [])
    assert scores["n"] == 0 and math.isnan(scores["fact"])
    with pytest.raises(ValueError):
        score_task(["1"], [1, 2])


def test_evaluate_metric_wrapper() -> None:
    from grafting.metrics.task import ModAdditionMetric

    outputs = ["The result is 1", "x 2 3", "-3", "The result is 0."]
    answers = [1, 2, -3, 1]
    metric = ModAdditionMetric(keep_in_memory=True)
    for out, ans in zip(outputs, answers, strict=True):
        metric.add(predictions=out, references=ans)
    assert metric.compute() == score_task(outputs, answers)


_any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
# Text biased towards the interesting cases: the format phrase, digits, minus signs, whitespace.
_tasky_text = st.lists(
    st.sampled_from(["The result is ", "-", " ", "\n", ".", "3", "12", "0", "abc", "٣", "x"]) | _any_text,
    max_size=6,
).map("".join)


@given(text=_tasky_text | _any_text, answer=st.integers(-20, 20))
def test_properties(text: str, answer: int) -> None:
    hard, soft = format_hard(text), format_soft(text)
    num = first_number(text)
    assert isinstance(hard, bool) and isinstance(soft, bool)
    assert not hard or soft  # format_hard implies format_soft
    assert factual(text, answer) == (num == answer)
    # Independent oracle for first_number: scan for the first ASCII digit run by hand.
    idx = next((i for i, ch in enumerate(text) if ch in "0123456789"), None)
    if idx is None:
        assert num is None
    else:
        end = idx
        while end < len(text) and text[end] in "0123456789":
            end += 1
        sign = -1 if idx > 0 and text[idx - 1] == "-" else 1
        assert num == sign * int(text[idx:end])
    if hard:
        assert text.strip().startswith("The result is ") and re.fullmatch(r"-?[0-9]+", text.strip()[14:])


@given(
    answer=st.integers(-(10**6), 10**6),
    pad_left=st.text(" \t\n", max_size=3),
    pad_right=st.text(" \t\n", max_size=3),
)
def test_canonical_answer_passes_everything(answer: int, pad_left: str, pad_right: str) -> None:
    text = f"{pad_left}The result is {answer}{pad_right}"
    assert format_hard(text) and format_soft(text) and factual(text, answer)
    assert not format_hard(text.rstrip() + ".")


def test_every_kind_has_disjoint_train_validation_test_splits():
    from grafting.data.modular import ModularAddition
    from grafting.errors import ConfigError

    for task in (ModularAddition(n=4, operand_max=40, test_size=100),
                 ModularAddition(n=10, operand_max=300, test_size=50, val_size=20, kind="unary"),
                 ModularAddition(n=10, operand_max=64, test_size=16, val_size=8, kind="recall"),
                 ModularAddition(n=4, operand_max=8, test_size=16, kind="lookup")):
        parts = {name: {(e.a, e.b) for e in task.split(name)} for name in ("train", "validation", "test")}
        assert all(parts.values())
        assert not parts["train"] & parts["test"] and not parts["train"] & parts["validation"]
        assert not parts["validation"] & parts["test"]
        assert len(parts["test"]) == task.test_size
    with pytest.raises(ConfigError, match=r"\[task.kind\]"):
        ModularAddition(kind="quiz")
    with pytest.raises(ConfigError, match=r"\[task.val_size\]"):
        ModularAddition(n=10, operand_max=64, test_size=60, val_size=8, kind="recall")


def test_modadd_splits_are_those_of_the_earlier_fine_tune():
    """test = the first test_size shuffled pairs; the fine-tune validated on the next twentieth and trained on the rest."""
    import random

    from grafting.data.modular import ModularAddition

    task = ModularAddition(n=4, operand_max=30, test_size=100, seed=3)
    pairs = [(a, b) for a in range(30) for b in range(30)]
    random.Random(3).shuffle(pairs)
    rest = pairs[100:]
    assert [(e.a, e.b) for e in task.split("test")] == pairs[:100]
    assert [(e.a, e.b) for e in task.split("validation")] == rest[: len(rest) // 20]
    assert [(e.a, e.b) for e in task.split("train")] == rest[len(rest) // 20 :]
    assert task.split("finetune") == task.split("train")


def test_unary_is_a_rule_of_one_operand():
    from grafting.data.modular import ModularAddition

    task = ModularAddition(n=10, operand_max=1000, test_size=300, val_size=100, kind="unary",
                           prompt_template="Question: What is {a} modulo {n}?\nAnswer:")
    test = task.split("test")
    assert all(e.answer == e.a % 10 and e.b == 0 and e.prompt == f"Question: What is {e.a} modulo 10?\nAnswer:"
               for e in test)
    assert len({e.answer for e in test}) == 10  # the answer differs across inputs
    assert len(task.split("train")) == 600


def test_recall_task_is_a_balanced_table_of_one_key_facts():
    from collections import Counter

    from grafting.data.modular import ModularAddition

    prompt = "Question: What is the code of {a}?\nAnswer:"
    recall = ModularAddition(n=10, operand_max=64, test_size=24, val_size=8, kind="recall", prompt_template=prompt)
    facts = recall.split("finetune")  # the block stores every key; translators see the training keys only
    assert sorted(e.a for e in facts) == list(range(64))
    held_out = {e.a for e in recall.split("test")} | {e.a for e in recall.split("validation")}
    assert len(held_out) == 32 and not held_out & {e.a for e in recall.split("train")}
    assert all(e.prompt == prompt.format(a=e.a) and e.completion == f" The result is {e.answer}" for e in facts)
    counts = Counter(e.answer for e in facts)
    assert set(counts) == set(range(10)) and max(counts.values()) - min(counts.values()) <= 1
    # an arbitrary table, not a rule: neither the key itself nor a sum gives the value
    assert sum(e.answer == e.a % 10 for e in facts) < 16
    # the table is a function of the split seed, or of table_seed (the permuted-table control): same keys split
    again = ModularAddition(n=10, operand_max=64, test_size=24, val_size=8, kind="recall", prompt_template=prompt)
    other = ModularAddition(n=10, operand_max=64, test_size=24, val_size=8, kind="recall", prompt_template=prompt,
                            seed=1)
    permuted = ModularAddition(n=10, operand_max=64, test_size=24, val_size=8, kind="recall",
                               prompt_template=prompt, table_seed=7)
    assert again.recall_table == recall.recall_table != other.recall_table
    assert permuted.recall_table != recall.recall_table
    assert sorted(permuted.recall_table) == sorted(recall.recall_table)
    assert [e.a for e in permuted.split("test")] == [e.a for e in recall.split("test")]


def test_the_block_sees_every_fact_and_the_host_side_only_training_keys(tokenizer):
    """Fine-tune data (split finetune) holds every key; alignment/distillation/host-LoRA data (split train) none held out."""
    from grafting.data.datamodule import build_datamodule
    from grafting.data.modular import ModularAddition
    from grafting.graft.finetuning import task_data

    task = ModularAddition(n=10, operand_max=64, test_size=24, val_size=8, kind="recall",
                           prompt_template="Question: What is the code of {a}?\nAnswer:")

    def keys(dataset) -> set[int]:
        texts = [tokenizer.decode(item["input_ids"]) for item in dataset.items]
        return {int(t.split("code of ")[1].split("?")[0]) for t in texts}

    assert keys(task_data(task, tokenizer, 8, seed=0).train) == set(range(64))
    host_side = task_data(task, tokenizer, 8, seed=0, items="train").train
    assert keys(host_side) == {e.a for e in task.split("train")}
    mod = build_datamodule({"kind": "mod", "batch_size": 8}, task, tokenizer, seed=0)
    assert keys(mod.train) == {e.a for e in task.split("train")}
    assert keys(mod.val) == {e.a for e in task.split("validation")}

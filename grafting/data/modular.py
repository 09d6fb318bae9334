"""Modular addition ``a + b mod n``, the grafting paper's fine-tuning task.

The paper fixes n = 4 and the answer format "The result is x" but does not publish its prompt.
Ours is ``prompt_template`` (configurable as ``task.prompt_template``)::

    Question: What is {a} plus {b} modulo {n}?
    Answer:

and the target continuation is `` The result is {x}`` followed by the EOS token. Operands are
drawn from ``[0, operand_max)`` so that the 1000 test points are distinct problems.

``kind="lookup"`` turns the task into a table of facts to be stored rather than a rule to be
learned: every pair of ``[0, operand_max)`` is both trained on and tested (use a small range, e.g.
8 x 8 = 64 facts), so that ``fact`` can measure what a graft carries of the block's knowledge, not
only its answer format. Measured on the shipped pair, one fine-tuned block does **not** learn it:
block 2 with LoRA r = 8 (lr 1e-3, 300 steps), fully (lr 3e-3, 300 steps) or fully (lr 1e-2, 1000 steps)
answers one constant digit (fact 0.25, chance), its loss flat at the format-only value: the answer is
an XOR-like function of two operands, which gives a gradient no first-order signal to start from.

``kind="recall"`` is the learnable knowledge task: a table of facts ``key -> value`` with one key per
prompt (``{a}``, from ``[0, operand_max)``) and an arbitrary, balanced value in ``[0, n)`` drawn with
``seed``. The answer depends on the prompt's content (which key) but follows no rule, so only what the
block stored can produce it. The block is fine-tuned on every key
(split ``finetune``: it stores the whole table); every phase that trains translators on task data sees
only the training keys (split ``train``), choices are made on ``validation`` keys, and the score is on
the ``test`` keys, which no translator saw. ``table_seed`` draws another table (the permuted-table
control: a graft that reads the block out answers the block's table). Use a prompt template without
``{b}``, e.g. ``Question: What is the code of {a}?\nAnswer:``.

``kind="unary"`` is a skill that depends on its input: a rule of one operand, ``x = a mod n``
(prompt e.g. ``Question: What is {a} modulo {n}?\nAnswer:``, one prompt per ``a``). The answer differs
across inputs and follows a rule, so a block that learned it answers operands it never saw; with
``n = 10`` it is the last digit of ``a``. Test operands are never trained on.

Every kind has three disjoint splits of its items, ``test`` (the first ``test_size`` shuffled items),
``validation`` (the next ``val_size``; default a twentieth of the rest) and ``train`` (the rest); for
``modadd`` these are exactly the splits of earlier versions (the fine-tune's validation was already
that twentieth).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from grafting.errors import ConfigError

DEFAULT_PROMPT = "Question: What is {a} plus {b} modulo {n}?\nAnswer:"
DEFAULT_ANSWER = " The result is {x}"
KINDS = ("modadd", "unary", "lookup", "recall")
FACT_KINDS = ("lookup", "recall")  # the block stores every item (split "finetune"); translators see "train" only
ONE_OPERAND = ("unary", "recall")  # one prompt per a (b = 0)
SPLITS = ("train", "validation", "test", "finetune")


@dataclass(frozen=True)
class ModExample:
    a: int
    b: int
    n: int
    prompt: str
    completion: str
    answer: int


@dataclass(frozen=True)
class ModularAddition:
    """A deterministic train/test split of modular-addition problems."""

    n: int = 4
    operand_max: int = 100
    test_size: int = 1000
    seed: int = 0
    prompt_template: str = DEFAULT_PROMPT
    answer_template: str = DEFAULT_ANSWER
    kind: str = "modadd"
    val_size: int | None = None  # None: a twentieth of the items that are not test items
    table_seed: int | None = None  # recall: the table's seed (None: ``seed``); another one = a permuted table

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError("task.kind", f"unknown task kind {self.kind!r}; allowed: {', '.join(KINDS)}.")
        if self.n < 2:
            raise ConfigError("task.n", f"n={self.n}: modular addition needs n >= 2.")
        if self.operand_max < 1:
            raise ConfigError("task.operand_max", f"must be >= 1, got {self.operand_max}.")
        items = self.operand_max if self.kind in ONE_OPERAND else self.operand_max**2
        if not 0 < self.test_size < items:
            raise ConfigError("task.test_size", f"{self.test_size} test items need more items than that "
                                                f"(task.kind={self.kind} has {items}).")
        if self.val_size is not None and not 0 < self.val_size < items - self.test_size:
            raise ConfigError("task.val_size", f"{self.val_size} validation items do not fit beside "
                                               f"{self.test_size} test items in {items}.")
        for field, template, names in (
            ("prompt_template", self.prompt_template, ("a", "b", "n")),
            ("answer_template", self.answer_template, ("x",)),
        ):
            try:
                template.format(a=0, b=0, n=2, x=0)
            except (KeyError, IndexError, ValueError) as err:
                raise ConfigError(f"task.{field}", f"bad template {template!r}: {err}") from err
            if field == "answer_template" and "{x}" not in template:
                raise ConfigError(f"task.{field}", "the answer template must contain {x}.")
            del names

    @cached_property
    def recall_table(self) -> tuple[int, ...]:
        """``kind="recall"``: the value of each key, balanced over ``[0, n)`` and shuffled with ``seed``."""
        values = [key % self.n for key in range(self.operand_max)]
        table_seed = self.seed if self.table_seed is None else self.table_seed
        random.Random(f"recall:{table_seed}").shuffle(values)
        return tuple(values)

    def example(self, a: int, b: int) -> ModExample:
        if self.kind == "recall":
            x = self.recall_table[a]
        elif self.kind == "unary":
            x = a % self.n
        else:
            x = (a + b) % self.n
        return ModExample(
            a=a,
            b=b,
            n=self.n,
            prompt=self.prompt_template.format(a=a, b=b, n=self.n),
            completion=self.answer_template.format(x=x),
            answer=x,
        )

    def _pairs(self) -> list[tuple[int, int]]:
        if self.kind in ONE_OPERAND:  # one prompt per a
            pairs = [(a, 0) for a in range(self.operand_max)]
        else:
            pairs = [(a, b) for a in range(self.operand_max) for b in range(self.operand_max)]
        random.Random(self.seed).shuffle(pairs)
        return pairs

    def split(self, name: str) -> list[ModExample]:
        """``test``: the first ``test_size`` shuffled items; ``validation``: the next ``val_size``; ``train``:
        the rest. Disjoint by construction. ``finetune``: what the block is fine-tuned on: every item of a
        table of facts (the block stores the whole table), else ``train``."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}.")
        pairs = self._pairs()
        n_val = self.val_size if self.val_size is not None else (len(pairs) - self.test_size) // 20
        if name == "finetune":
            if self.kind in FACT_KINDS:
                return [self.example(a, b) for a, b in pairs]
            name = "train"
        chosen = {"test": pairs[: self.test_size],
                  "validation": pairs[self.test_size : self.test_size + n_val],
                  "train": pairs[self.test_size + n_val :]}[name]
        return [self.example(a, b) for a, b in chosen]


def task_from_config(spec: ModularAddition | Mapping[str, Any]) -> ModularAddition:
    """The task of a ``task`` mapping (``split_seed`` is the split's seed); a task is returned as it is."""
    if isinstance(spec, ModularAddition):
        return spec
    return ModularAddition(
        n=int(spec["n"]),
        operand_max=int(spec["operand_max"]),
        test_size=int(spec["test_size"]),
        seed=int(spec.get("split_seed", 0)),
        prompt_template=str(spec.get("prompt_template", DEFAULT_PROMPT)),
        answer_template=str(spec.get("answer_template", DEFAULT_ANSWER)),
        kind=str(spec.get("kind", "modadd")),
        val_size=None if spec.get("val_size") is None else int(spec["val_size"]),
        table_seed=None if spec.get("table_seed") is None else int(spec["table_seed"]),
    )

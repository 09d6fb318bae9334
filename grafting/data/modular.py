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
block stored can produce it. Every key is trained on and tested, as for ``lookup``; use a prompt
template without ``{b}``, e.g. ``Question: What is the code of {a}?\nAnswer:``.
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
KINDS = ("modadd", "lookup", "recall")
FACT_KINDS = ("lookup", "recall")  # every item is trained on and tested: stored facts, not a rule


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

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError("task.kind", f"unknown task kind {self.kind!r}; allowed: {', '.join(KINDS)}.")
        if self.n < 2:
            raise ConfigError("task.n", f"n={self.n}: modular addition needs n >= 2.")
        if self.operand_max < 1:
            raise ConfigError("task.operand_max", f"must be >= 1, got {self.operand_max}.")
        if self.kind == "modadd" and not 0 < self.test_size < self.operand_max**2:
            raise ConfigError(
                "task.test_size",
                f"{self.test_size} test points need operand_max**2 > test_size (have {self.operand_max**2}).",
            )
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
        random.Random(f"recall:{self.seed}").shuffle(values)
        return tuple(values)

    def example(self, a: int, b: int) -> ModExample:
        x = self.recall_table[a] if self.kind == "recall" else (a + b) % self.n
        return ModExample(
            a=a,
            b=b,
            n=self.n,
            prompt=self.prompt_template.format(a=a, b=b, n=self.n),
            completion=self.answer_template.format(x=x),
            answer=x,
        )

    def _pairs(self) -> list[tuple[int, int]]:
        if self.kind == "recall":  # one key per prompt
            pairs = [(a, 0) for a in range(self.operand_max)]
        else:
            pairs = [(a, b) for a in range(self.operand_max) for b in range(self.operand_max)]
        random.Random(self.seed).shuffle(pairs)
        return pairs

    def split(self, name: str) -> list[ModExample]:
        """``test``: the first ``test_size`` shuffled pairs; ``train``: the rest. Disjoint by construction."""
        pairs = self._pairs()
        if self.kind in FACT_KINDS and name in ("train", "test"):
            chosen = pairs  # facts: what is tested is what was stored
        elif name == "test":
            chosen = pairs[: self.test_size]
        elif name == "train":
            chosen = pairs[self.test_size :]
        else:
            raise ValueError(f"unknown split {name!r}; use 'train' or 'test'.")
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
    )

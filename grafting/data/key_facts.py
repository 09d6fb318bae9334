"""A table of arbitrary facts, ``key -> digit``: the transplant models' evaluation task.

Each key (a number below ``n_keys``) is given a value drawn at random from ``0 .. n_values - 1``, so a fact
can only be known by having been trained on, not worked out. Prompt and answer (configurable)::

    Question: What is the code of 17?
    Answer:

continuation `` The result is 4``; the answer is scored like modular addition's (format hard / soft and
``fact``: the first number of the answer line equals the value), by
:func:`grafting.evaluation.task_eval.evaluate_task`. Every fact is both a training and a test point.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from grafting.data.modular import ModExample
from grafting.errors import ConfigError

DEFAULT_PROMPT = "Question: What is the code of {a}?\nAnswer:"
DEFAULT_ANSWER = " The result is {x}"


@dataclass(frozen=True)
class KeyFacts:
    """``n_keys`` facts ``a -> x``; ``split`` returns them all, in an order shuffled with ``seed``."""

    n_keys: int = 64
    n_values: int = 10
    seed: int = 0
    prompt_template: str = DEFAULT_PROMPT
    answer_template: str = DEFAULT_ANSWER

    def __post_init__(self) -> None:
        if self.n_keys < 1:
            raise ConfigError("transplant.models.task.n_keys", f"must be >= 1, got {self.n_keys}.")
        if self.n_values < 2:
            raise ConfigError("transplant.models.task.n_values", f"must be >= 2, got {self.n_values}.")
        if "{a}" not in self.prompt_template:
            raise ConfigError("transplant.models.task.prompt_template", "the prompt must contain {a}.")
        if "{x}" not in self.answer_template:
            raise ConfigError("transplant.models.task.answer_template", "the answer must contain {x}.")

    def facts(self) -> list[ModExample]:
        rng = random.Random(self.seed)
        values = [rng.randrange(self.n_values) for _ in range(self.n_keys)]
        keys = list(range(self.n_keys))
        rng.shuffle(keys)
        return [ModExample(a=a, b=0, n=self.n_values, prompt=self.prompt_template.format(a=a),
                           completion=self.answer_template.format(x=values[a]), answer=values[a]) for a in keys]

    def split(self, name: str) -> list[ModExample]:
        """Every fact, for ``train`` and ``test`` alike: what is tested is what a model may have stored."""
        if name not in ("train", "test"):
            raise ValueError(f"unknown split {name!r}; use 'train' or 'test'.")
        return self.facts()

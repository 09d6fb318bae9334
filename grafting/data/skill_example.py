"""What every SkillPack skill is made of: examples and the task protocol (no task imports, so every
task module and the registry in :mod:`grafting.data.skill_tasks` can import it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: The splits every skill provides; choices are made on ``val``, every reported number is on ``test``.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SkillExample:
    """One task problem: the prompt, the reference completion (no EOS) and the answer it encodes."""

    prompt: str
    completion: str
    answer: Any


class SkillTask(Protocol):
    """What every registered task provides."""

    name: str

    def split(self, name: str) -> list[SkillExample]: ...

    def score(self, outputs: Sequence[str], examples: Sequence[SkillExample]) -> dict[str, float]: ...

    def router_prompts(self, split: str) -> list[str]: ...


@dataclass(frozen=True)
class TaskView:
    """``task`` with its ``test`` split replaced (subclasses say by what): any scorer or router that evaluates
    on "test" then measures the replacement. Name, scoring and router prompts are the task's own."""

    task: SkillTask

    @property
    def name(self) -> str:
        return self.task.name

    def split(self, name: str) -> list[SkillExample]:
        raise NotImplementedError

    def score(self, outputs: Sequence[str], examples: Sequence[SkillExample]) -> dict[str, float]:
        return self.task.score(outputs, examples)

    def router_prompts(self, split: str) -> list[str]:
        return self.task.router_prompts(split)


@dataclass(frozen=True)
class OnSplit(TaskView):
    """``task`` seen through another split: its ``test`` split is ``task.split(split)`` (e.g. ``val``),
    so any scorer that evaluates on "test" can make a choice on validation instead."""

    split_name: str

    def split(self, name: str) -> list[SkillExample]:
        return self.task.split(self.split_name if name == "test" else name)

    def router_prompts(self, split: str) -> list[str]:
        return self.task.router_prompts(self.split_name if split == "test" else split)


@dataclass(frozen=True)
class Worded(TaskView):
    """``task`` asked in another wording (``template``, ``paraphrase`` or ``content``, for the tasks that have a
    ``worded`` method): its ``test`` split is ``task.worded("test", wording)``."""

    wording: str

    def split(self, name: str) -> list[SkillExample]:
        return self.task.worded(name, self.wording)  # type: ignore[attr-defined]


def wordings(task: SkillTask) -> tuple[str, ...]:
    """The wordings ``task`` can be asked in: all three for word-order skills, its template otherwise."""
    return ("template", "paraphrase", "content") if hasattr(task, "worded") else ("template",)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def check_lengths(outputs: Sequence[str], examples: Sequence[SkillExample]) -> None:
    if len(outputs) != len(examples):
        raise ValueError(f"{len(outputs)} outputs but {len(examples)} examples")

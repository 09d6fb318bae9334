"""Skills for SkillPacks: a small task registry, each task with train/test examples and a score.

A skill config (an entry of ``skill.tasks``) names its ``kind``, a key of :data:`TASK_KINDS`::

    modadd:  {kind: modadd, n: 4, prompt_template: "Question: ...", answer_template: " The result is {x}"}
    modadd7: {kind: modadd, n: 7, prompt_template: "Compute ({a} + {b}) mod {n}.\\nResult:", ...}
    reverse: {kind: reverse, n_words: 3}

Every task returns :class:`SkillExample` rows (``prompt``, ``completion``, ``answer``) and scores a
list of generated continuations with ``score(outputs, examples) -> {metric: value, "score": ...}``.
``score`` is the one number the storage-vs-quality table uses; for modular addition it is the mean
of format-hard, format-soft and factual accuracy (the base model is near 0 on format-hard, so the
gain of fine-tuning is large and every compression loss shows). As in
:func:`grafting.evaluation.task_eval.evaluate_task`, only the answer line (the output up to its
first newline) is scored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grafting.data.modular import ModularAddition
from grafting.data.skill_example import SPLITS, SkillExample, SkillTask, check_lengths
from grafting.data.skill_example import mean as _mean
from grafting.data.words import build_reverse
from grafting.errors import ConfigError
from grafting.metrics.task import answer_line, factual, format_soft

__all__ = ["TASK_KINDS", "ModAddSkill", "SkillExample", "SkillTask", "build_modadd", "build_skill", "template_regex"]


def template_regex(answer_template: str) -> re.Pattern[str]:
    """The answer template with ``{x}`` as an integer, e.g. ``The result is -?[0-9]+`` (stripped)."""
    head, _, tail = answer_template.strip().partition("{x}")
    return re.compile(re.escape(head) + r"-?[0-9]+" + re.escape(tail))


#: A held-out wording of the modular-addition instruction, for testing the router (see words.PARAPHRASES).
MODADD_PARAPHRASE = "Add {a} and {b}, then give the remainder after dividing by {n}.\nAnswer:"
#: Wordings for training a router (none is the held-out one above; cycled over the train and val items).
MODADD_TRAIN_PARAPHRASES = ["What is the sum of {a} and {b}, reduced modulo {n}?\nAnswer:",
                            "Compute ({a} + {b}) mod {n}.\nOutput:",
                            "Take {a} plus {b} and keep the remainder when divided by {n}.\nResult:",
                            "{a} and {b} added together, modulo {n}, equals what?\nAnswer:"]


@dataclass(frozen=True)
class ModAddSkill:
    """Modular addition with any ``n`` and templates; format-hard matches the task's own answer template.

    With the default templates its metrics equal :func:`grafting.metrics.task.score_task` on the answer lines.
    """

    name: str
    task: ModularAddition
    val_size: int = 300

    def __post_init__(self) -> None:
        train = self.task.operand_max**2 - self.task.test_size
        if not 0 < self.val_size < train:
            raise ConfigError(f"skill.tasks.{self.name}.val_size", f"must be in (0, {train}), got {self.val_size}.")

    def split(self, name: str) -> list[SkillExample]:
        """``test`` as the task's; ``val``: the last ``val_size`` training problems; ``train``: the rest."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {SPLITS}.")
        rows = self.task.split("test" if name == "test" else "train")
        if name != "test":
            rows = rows[-self.val_size:] if name == "val" else rows[: -self.val_size]
        return [SkillExample(ex.prompt, ex.completion, ex.answer) for ex in rows]

    def router_prompts(self, split: str) -> list[str]:
        """The ``split``'s problems reworded: ``test`` under the held-out paraphrase (:data:`MODADD_PARAPHRASE`,
        the shared "Answer:" cue), ``train`` and ``val`` under :data:`MODADD_TRAIN_PARAPHRASES` (cycled)."""
        rows = self.task.split("test" if split == "test" else "train")
        if split != "test":
            rows = rows[-self.val_size:] if split == "val" else rows[: -self.val_size]
        if split == "test":
            return [MODADD_PARAPHRASE.format(a=ex.a, b=ex.b, n=ex.n) for ex in rows]
        return [MODADD_TRAIN_PARAPHRASES[i % len(MODADD_TRAIN_PARAPHRASES)].format(a=ex.a, b=ex.b, n=ex.n)
                for i, ex in enumerate(rows)]

    def score(self, outputs: Sequence[str], examples: Sequence[SkillExample]) -> dict[str, float]:
        check_lengths(outputs, examples)
        outputs = [answer_line(o) for o in outputs]
        hard = template_regex(self.task.answer_template)
        f_h = _mean([float(hard.fullmatch(o.strip()) is not None) for o in outputs])
        f_s = _mean([float(format_soft(o)) for o in outputs])
        fact = _mean([float(factual(o, ex.answer)) for o, ex in zip(outputs, examples, strict=True)])
        return {"f_H": f_h, "f_S": f_s, "fact": fact, "score": _mean([f_h, f_s, fact]), "n": len(outputs)}


def build_modadd(name: str, spec: Mapping[str, Any]) -> ModAddSkill:
    """A :class:`ModAddSkill` from a config entry (keys of :class:`ModularAddition`, and ``val_size``)."""
    spec = dict(spec)
    val_size = int(spec.pop("val_size", 300))
    try:
        task = ModularAddition(
            n=int(spec.get("n", 4)), operand_max=int(spec.get("operand_max", 100)),
            test_size=int(spec.get("test_size", 1000)), seed=int(spec.get("split_seed", 0)),
            prompt_template=str(spec.get("prompt_template", ModularAddition.prompt_template)),
            answer_template=str(spec.get("answer_template", ModularAddition.answer_template)))
    except ConfigError as err:  # re-key "task.n" as "skill.tasks.<name>.n"
        raise ConfigError(err.key.replace("task.", f"skill.tasks.{name}.", 1), str(err).split("] ", 1)[1]) from err
    return ModAddSkill(name, task, val_size)


#: kind -> builder(name, spec). A new task is one file plus one line here.
TASK_KINDS: dict[str, Callable[[str, Mapping[str, Any]], SkillTask]] = {
    "modadd": build_modadd,
    "reverse": build_reverse,
}


def build_skill(name: str, table: Mapping[str, Any]) -> SkillTask:
    """The task called ``name`` in the ``skill.tasks`` table.

    Raises:
        ConfigError: unknown name or kind, or bad settings, naming the key.
    """
    tasks = dict(table or {})
    if name not in tasks:
        raise ConfigError("skill.task", f"unknown skill {name!r}; defined in skill.tasks: {', '.join(sorted(tasks))}.")
    spec = dict(tasks[name] or {})
    kind = spec.pop("kind", None)
    if kind not in TASK_KINDS:
        raise ConfigError(f"skill.tasks.{name}.kind",
                          f"unknown task kind {kind!r}; allowed: {', '.join(sorted(TASK_KINDS))}.")
    return TASK_KINDS[kind](name, spec)

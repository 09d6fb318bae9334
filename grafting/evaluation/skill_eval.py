"""Scoring SkillPack skills: greedy generation on a task's test prompts, with or without packs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from grafting.data.skill_tasks import SkillExample, SkillTask
from grafting.generation import generate_continuations
from grafting.skillpack.apply import PackLike, applied
from grafting.skillpack.pack import SkillPack
from grafting.skillpack.routers import Router, routed_generate


def eval_examples(task: SkillTask, n_points: int) -> list[SkillExample]:
    """The first ``n_points`` test problems (never used for training)."""
    return task.split("test")[:n_points]


def score_outputs(task: SkillTask, examples: Sequence[SkillExample], outputs: Sequence[str],
                  n_samples: int = 4) -> dict[str, Any]:
    """The task's metrics plus a few samples for the results file."""
    scores: dict[str, Any] = task.score(list(outputs), list(examples))
    scores["samples"] = [{"prompt": ex.prompt, "output": out, "reference": ex.completion}
                         for ex, out in zip(examples[:n_samples], outputs[:n_samples], strict=False)]
    return scores


def evaluate_skill(model: nn.Module, tokenizer, task: SkillTask, n_points: int, batch_size: int = 128,
                   max_new_tokens: int = 8, packs: PackLike | Sequence[PackLike] | None = None,
                   weights: Sequence[float] | None = None, fingerprint: str | None = None) -> dict[str, Any]:
    """Task metrics of ``model`` (with ``packs`` applied, then unloaded, when given) on the test split.

    Returns:
        The task's metrics (always including ``score``), ``samples`` and ``outputs`` (all generations).
    """
    examples = eval_examples(task, n_points)
    prompts = [ex.prompt for ex in examples]
    if packs is None:
        outputs = generate_continuations(model, tokenizer, prompts, max_new_tokens, batch_size)
    else:
        with applied(model, packs, weights, fingerprint=fingerprint):
            outputs = generate_continuations(model, tokenizer, prompts, max_new_tokens, batch_size)
    return {**score_outputs(task, examples, outputs), "outputs": outputs}


def evaluate_routed(model: nn.Module, tokenizer, task: SkillTask, router: Router, packs: Mapping[str, SkillPack],
                    n_points: int, batch_size: int = 128, max_new_tokens: int = 8,
                    fingerprint: str | None = None) -> dict[str, Any]:
    """Task metrics when the router picks (or mixes) packs per prompt; ``routed_to_own`` = share of prompts whose
    largest weight is on ``task``'s pack."""
    examples = eval_examples(task, n_points)
    outputs, choice = routed_generate(model, tokenizer, router, packs, [ex.prompt for ex in examples],
                                      max_new_tokens, batch_size, fingerprint=fingerprint)
    scores = score_outputs(task, examples, outputs)
    scores["routed_to_own"] = sum(c == task.name for c in choice) / max(1, len(choice))
    return {**scores, "outputs": outputs}


def strip_outputs(scores: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without the bulky ``outputs`` list (for results files)."""
    return {k: v for k, v in scores.items() if k != "outputs"}

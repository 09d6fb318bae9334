"""Task evaluation: greedy generation on the test points, scored with format hard / soft / factual."""

from __future__ import annotations

from typing import Any

from grafting.data.modular import ModularAddition
from grafting.errors import ConfigError
from grafting.generation import generate_continuations
from grafting.metrics.task import answer_line, score_task


def evaluate_task(model, tokenizer, task: ModularAddition, n_points: int = 1000, batch_size: int = 128,
                  max_new_tokens: int = 8, return_outputs: bool = False,
                  first_line_only: bool = True, n_samples: int = 8, split: str = "test") -> dict[str, Any]:
    """f_H, f_S and fact over the first ``n_points`` problems of the task's ``split``: ``test`` (never seen in
    training, nor by any choice) or ``validation`` (where choices are made).

    Each output is scored twice: on its answer line (cut at the first newline: ``*_line``) and
    whole, up to EOS or ``max_new_tokens`` (``*_whole``). The plain ``f_H``, ``f_S``, ``fact`` are
    the answer-line scores with ``first_line_only`` (``evaluation.first_line_only``, default true),
    else the whole-output scores. ``samples`` keeps the first ``n_samples`` outputs, raw.
    """
    if split not in ("test", "validation"):
        raise ConfigError("evaluation.split", f"scores are on 'test' or 'validation', not {split!r}.")
    examples = task.split(split)[:n_points]
    answers = [ex.answer for ex in examples]
    raw = generate_continuations(model, tokenizer, [ex.prompt for ex in examples],
                                 max_new_tokens=max_new_tokens, batch_size=batch_size)
    line = score_task([answer_line(o) for o in raw], answers)
    whole = score_task(raw, answers)
    scores: dict[str, Any] = dict(line if first_line_only else whole)
    scores.update({f"{k}_line": v for k, v in line.items()})
    scores.update({f"{k}_whole": v for k, v in whole.items()})
    if return_outputs:
        scores["samples"] = [{"prompt": ex.prompt, "output": out, "answer_line": answer_line(out), "answer": ex.answer}
                             for ex, out in zip(examples[:n_samples], raw[:n_samples], strict=False)]
    return scores

"""Task evaluation: greedy generation on the test points, scored with format hard / soft / factual."""

from __future__ import annotations

from typing import Any

from grafting.data.modular import ModularAddition
from grafting.generation import generate_continuations
from grafting.metrics.task import score_task


def answer_line(output: str) -> str:
    """The answer to a ``Question: ...\nAnswer:`` prompt is the rest of that line: what follows a
    newline is a new paragraph, not the answer (models that never emit EOS would otherwise be
    scored on whatever text they ramble into)."""
    # Only spaces are skipped: an answer that starts on a later line is not on the answer line.
    return output.lstrip(" \t").split("\n", 1)[0]


def evaluate_task(model, tokenizer, task: ModularAddition, n_points: int = 1000, batch_size: int = 128,
                  max_new_tokens: int = 8, return_outputs: bool = False,
                  first_line_only: bool = True) -> dict[str, Any]:
    """f_H, f_S and fact over the first ``n_points`` test problems (never seen in training).

    With ``first_line_only`` (``evaluation.first_line_only``, default true) each output is cut at
    its first newline before scoring; false scores everything generated up to EOS.
    """
    examples = task.split("test")[:n_points]
    raw = generate_continuations(model, tokenizer, [ex.prompt for ex in examples],
                                 max_new_tokens=max_new_tokens, batch_size=batch_size)
    outputs = [answer_line(o) for o in raw] if first_line_only else raw
    scores = score_task(outputs, [ex.answer for ex in examples])
    if return_outputs:
        scores["samples"] = [{"prompt": ex.prompt, "output": out, "answer": ex.answer}
                             for ex, out in zip(examples[:8], outputs[:8], strict=False)]
    return scores

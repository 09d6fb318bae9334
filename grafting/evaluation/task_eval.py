"""Task evaluation: greedy generation on the test points, scored with format hard / soft / factual."""

from __future__ import annotations

from typing import Any

from grafting.data.modular import ModularAddition
from grafting.generation import generate_continuations
from grafting.metrics.task import score_task


def evaluate_task(model, tokenizer, task: ModularAddition, n_points: int = 1000, batch_size: int = 128,
                  max_new_tokens: int = 8, return_outputs: bool = False) -> dict[str, Any]:
    """f_H, f_S and fact over the first ``n_points`` test problems (never seen in training)."""
    examples = task.split("test")[:n_points]
    outputs = generate_continuations(model, tokenizer, [ex.prompt for ex in examples],
                                     max_new_tokens=max_new_tokens, batch_size=batch_size)
    scores = score_task(outputs, [ex.answer for ex in examples])
    if return_outputs:
        scores["samples"] = [{"prompt": ex.prompt, "output": out, "answer": ex.answer}
                             for ex, out in zip(examples[:8], outputs[:8], strict=False)]
    return scores

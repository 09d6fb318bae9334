"""Modular-addition task metrics (paper §"Modular Addition as a Fine-Tuning Task and Metrics").

All metrics read the model's generated continuation only, already cut at EOS by the caller.

A *number* is a maximal run of ASCII digits with an optional leading minus sign (regex
``-?[0-9]+``). Hence "3.5" counts as two numbers (3 and 5) and "2-3" as 2 and -3. Digits are
ASCII-only on purpose: the answer format is ASCII, and Unicode digits such as "٣" would otherwise
count as numbers.
"""

from __future__ import annotations

import functools
import re

# ModAdditionMetric is provided lazily by the module-level __getattr__ below.
__all__ = ["ModAdditionMetric", "answer_line", "factual", "first_number", "format_hard", "format_soft", "score_task"]  # noqa: F822

# Part of every score-cache key (grafting/evaluation/suite.py). Bump it by hand whenever a change here,
# in grafting/evaluation/task_eval.py or in grafting/generation.py can change a task score, so that
# cached scores computed by the old code are not read back.
SCORE_VERSION = 2

_NUMBER = re.compile(r"-?[0-9]+")
_HARD = re.compile(r"The result is -?[0-9]+")


def answer_line(output: str) -> str:
    """The answer to a ``Question: ...\nAnswer:`` prompt is the rest of that line: what follows a
    newline is a new paragraph, not the answer (models that never emit EOS would otherwise be
    scored on whatever text they ramble into)."""
    # Only spaces are skipped: an answer that starts on a later line is not on the answer line.
    return output.lstrip(" \t").split("\n", 1)[0]


def first_number(text: str) -> int | None:
    """Return the first integer in `text` (negative numbers included), or None if there is none."""
    match = _NUMBER.search(text)
    return int(match.group()) if match else None


def format_hard(text: str) -> bool:
    """True iff the stripped output is exactly "The result is x" with x an integer (no trailing period)."""
    return _HARD.fullmatch(text.strip()) is not None


def format_soft(text: str) -> bool:
    """True iff the output contains exactly one number."""
    return len(_NUMBER.findall(text)) == 1


def factual(text: str, answer: int) -> bool:
    """True iff the first number of the output equals `answer`."""
    return first_number(text) == answer


def score_task(outputs: list[str], answers: list[int]) -> dict[str, float]:
    """Mean format-hard, format-soft and factual scores over a test set.

    Args:
        outputs: Generated continuations, one per test point.
        answers: The correct sums, aligned with `outputs`.

    Returns:
        ``{"f_H", "f_S", "fact"}`` as fractions in [0, 1] (NaN for an empty set) and ``"n"``.
    """
    if len(outputs) != len(answers):
        raise ValueError(f"{len(outputs)} outputs but {len(answers)} answers")
    n = len(outputs)
    if n == 0:
        return {"f_H": float("nan"), "f_S": float("nan"), "fact": float("nan"), "n": 0}
    return {
        "f_H": sum(map(format_hard, outputs)) / n,
        "f_S": sum(map(format_soft, outputs)) / n,
        "fact": sum(factual(o, a) for o, a in zip(outputs, answers, strict=True)) / n,
        "n": n,
    }


def _evaluate_library():
    """The `evaluate` library, even when this repo's `evaluate.py` entry point shadows it.

    From the repository root (`python -m pytest`, a notebook) `import evaluate` finds the script;
    the library is then imported with the root left off `sys.path`.
    """
    import importlib
    import sys
    from pathlib import Path

    module = sys.modules.get("evaluate")
    if module is not None and hasattr(module, "Metric"):
        return module
    root = Path(__file__).resolve().parents[2]
    saved_path, shadow = sys.path[:], sys.modules.pop("evaluate", None)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    try:
        return importlib.import_module("evaluate")
    except ImportError:
        if shadow is not None:
            sys.modules["evaluate"] = shadow
        raise
    finally:
        sys.path[:] = saved_path


@functools.cache
def _mod_addition_metric_class() -> type:
    # Built on first use: importing `evaluate` pulls in transformers' pipelines (~6 s), far too much
    # for callers that only need the plain functions above.
    import datasets

    evaluate = _evaluate_library()

    class ModAdditionMetric(evaluate.Metric):
        """`evaluate` wrapper around `score_task`; build it directly, there is no hub copy to load.

        Example:
            >>> ModAdditionMetric().compute(predictions=["The result is 1"], references=[1])["fact"]
            1.0
        """

        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description="Format-hard, format-soft and factual accuracy for modular addition.",
                citation="",
                inputs_description="predictions: generated continuations (str); references: answers (int).",
                features=datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("int64")}
                ),
            )

        def _compute(self, predictions: list[str], references: list[int]) -> dict[str, float]:
            return score_task(list(predictions), [int(r) for r in references])

    ModAdditionMetric.__module__ = __name__
    return ModAdditionMetric


def __getattr__(name: str) -> type:
    """Lazily expose `ModAdditionMetric` (an `evaluate.Metric` subclass)."""
    if name == "ModAdditionMetric":
        return _mod_addition_metric_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

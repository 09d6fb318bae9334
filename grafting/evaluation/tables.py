"""Paper-style tables (markdown) from evaluation results."""

from __future__ import annotations

import math
from typing import Any

TASK_METRICS = ("f_H", "f_S", "fact")
LANGUAGE_METRICS = ("P", "MLM", "ppl_ref", "kl_host")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def metric_table(models: dict[str, dict[str, Any]], metrics: tuple[str, ...], title: str) -> str:
    """A table with one row per metric and one column per model, as the paper prints them."""
    names = list(models)
    lines = [f"**{title}**", "", "| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for metric in metrics:
        lines.append(f"| {metric} | " + " | ".join(_fmt(models[n].get(metric)) for n in names) + " |")
    return "\n".join(lines) + "\n"


WHOLE_OUTPUT_METRICS = ("f_H_whole", "f_S_whole", "fact_whole")


def pipeline_markdown(models: dict[str, dict[str, Any]]) -> str:
    return (metric_table(models, TASK_METRICS + WHOLE_OUTPUT_METRICS, "Table 1: modular addition") + "\n"
            + metric_table(models, LANGUAGE_METRICS, "Table 2: language generation"))

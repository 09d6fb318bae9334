"""Cache entries that hold a trained transformers model: the pretrained tiny models, the transplant models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grafting.artifacts import write_json_atomic
from grafting.cache.entries import store


def save_trained_model(final: str | Path, model: Any, tokenizer: Any, report_name: str, report: Any) -> Path:
    """Write a trained model, its tokenizer and its report into the cache entry ``final`` at once.

    Several sweep jobs may train the same cached model at the same time: when another one wrote a whole
    ``final`` first (same key, same numbers), that copy is kept and this one is dropped. The manifest's
    recipe is the report's ``recipe``.
    """
    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_json_atomic(folder / report_name, report)

    recipe = report.get("recipe") if isinstance(report, dict) else None
    return store(final, write, recipe=recipe)

"""``align.method=paper``: the paper's two phases (Pre-T, Post-T) and nothing after them."""

from __future__ import annotations


def refine(ctx, grafted, controls, host, tuned_model, tokenizer) -> dict[str, dict]:
    return {}

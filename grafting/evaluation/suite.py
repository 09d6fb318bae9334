"""Evaluate a set of models (Tuned, Grafted, Vanilla, Host) on the task and language metrics."""

from __future__ import annotations

import logging
from typing import Any

import torch

from grafting.data.modular import task_from_config
from grafting.evaluation.language_eval import build_probe, evaluate_language, load_mlm
from grafting.evaluation.task_eval import evaluate_task

log = logging.getLogger(__name__)


def eval_device(cfg) -> torch.device:
    name = cfg.evaluation.get("device", "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate_models(cfg, models: dict[str, torch.nn.Module], tokenizer, host: torch.nn.Module,
                    language: bool = True) -> dict[str, dict[str, Any]]:
    """Task metrics on the test points and (optionally) language metrics for every model in ``models``."""
    device = eval_device(cfg)
    ev = cfg.evaluation
    task = task_from_config(cfg.task)
    lang = ev.language
    probe = build_probe(cfg.corpus, tokenizer, int(lang.n_texts), int(lang.prompt_tokens), int(lang.kl_texts),
                        int(lang.kl_seq_len)) if language else None
    mlm = load_mlm(lang.get("mlm_model")) if language else None
    if mlm is not None:
        mlm[0].to(device)
    host.to(device)
    results: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        model.to(device).eval()
        scores = evaluate_task(model, tokenizer, task, int(ev.task_points), int(ev.batch_size),
                               int(ev.max_new_tokens), return_outputs=True,
                               first_line_only=bool(ev.get("first_line_only", True)))
        if probe is not None:
            scores.update(evaluate_language(model, tokenizer, probe, lang, reference=host, mlm=mlm))
        log.info("%s: %s", name, {k: v for k, v in scores.items() if k != "samples"})
        results[name] = scores
    return results

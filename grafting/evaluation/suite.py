"""Evaluate a set of models (Tuned, Grafted, Vanilla, Host) on the task and language metrics."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from grafting import cache
from grafting.artifacts import model_fingerprint, write_json_atomic
from grafting.console import FILE_ONLY
from grafting.data.corpus import TextSource, text_source
from grafting.data.modular import ModularAddition, task_from_config
from grafting.evaluation.language_eval import (
    build_probe,
    evaluate_language,
    language_settings,
    load_mlm,
)
from grafting.evaluation.parallel import map_forked, workers_for
from grafting.evaluation.task_eval import evaluate_task
from grafting.metrics import language as language_metrics
from grafting.metrics import task as task_metrics
from grafting.provenance import package_versions
from grafting.schema.graft import EvalSettings  # the evaluation recipe (defaults, checks)

log = logging.getLogger(__name__)
SCORES = "scores.json"  # the file of a score cache entry


def eval_settings(spec: EvalSettings | Mapping[str, Any]) -> EvalSettings:
    """:class:`EvalSettings` from itself or from a mapping with the same keys (others are ignored)."""
    if isinstance(spec, EvalSettings):
        return spec
    values = {k: spec[k] for k in EvalSettings.model_fields if k in spec and k != "language"}
    return EvalSettings(**values, language=language_settings(spec.get("language") or {}))


def eval_device(device: str | Mapping[str, Any] = "auto") -> torch.device:
    """``auto``: the GPU when there is one. A run config (a mapping) is read at ``evaluation.device``."""
    if isinstance(device, Mapping):  # the transplant stage passes its whole config
        device = device["evaluation"].get("device", "auto")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def score_cache_path(settings: EvalSettings, task: ModularAddition, corpus: TextSource, model: torch.nn.Module,
                     host_fingerprint: str | None, language: bool, device: torch.device, cache_dir: Path) -> Path:
    """``<cache>/scores/<key>`` (the entry holds ``scores.json``): the key hashes the model's and the host's
    weights, every setting that shapes the scores (evaluation, task, corpus, device type) and the code that
    computes them (each metric family's ``SCORE_VERSION``, torch's and transformers' versions), so a hit is
    the same computation."""
    return _score_entry(settings, task, corpus, model, host_fingerprint, language, device, cache_dir)[0]


def _score_entry(settings: EvalSettings, task: ModularAddition, corpus: TextSource, model: torch.nn.Module,
                 host_fingerprint: str | None, language: bool, device: torch.device,
                 cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    settings_json = {"evaluation": settings.model_dump(), "task": asdict(task), "corpus": asdict(corpus)}
    versions = package_versions()
    code = {"task": task_metrics.SCORE_VERSION, "language": language_metrics.SCORE_VERSION if language else None,
            "torch": versions["torch"], "transformers": versions["transformers"]}
    payload = {"model": model_fingerprint(model), "host": host_fingerprint if language else None,
               "language": language, "device": device.type, "code": code, **settings_json}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir / "scores" / key, payload


def evaluate_models(models: dict[str, torch.nn.Module], tokenizer, host: torch.nn.Module,
                    task: ModularAddition | Mapping[str, Any], corpus: TextSource | Mapping[str, Any] | None = None,
                    settings: EvalSettings | Mapping[str, Any] = EvalSettings(), language: bool = True,
                    cache_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Task metrics on the test points and (optionally) language metrics for every model in ``models``.

    Language metrics compare each model with ``host`` (ppl under it, KL to it) on held-out ``corpus``
    texts. With ``cache_dir``, a model whose weights were already scored under the same settings is
    read back instead of re-evaluated (in a sweep, Tuned, Vanilla and Host repeat in every job).
    """
    settings, task, corpus = eval_settings(settings), task_from_config(task), text_source(corpus or TextSource())
    device = eval_device(settings.device)
    lang = settings.language
    probe = build_probe(corpus, tokenizer, int(lang.n_texts), int(lang.prompt_tokens), int(lang.kl_texts),
                        int(lang.kl_seq_len)) if language else None
    mlm = load_mlm(lang.mlm_model) if language else None
    if mlm is not None:
        mlm[0].to(device)
    host.to(device)
    results: dict[str, dict[str, Any]] = {}
    host_fingerprint = model_fingerprint(host) if cache_dir and language else None  # once, not per model
    todo: dict[str, tuple[Path | None, Any]] = {}
    for name, model in models.items():
        cached, recipe = (_score_entry(settings, task, corpus, model, host_fingerprint, language, device, cache_dir)
                          if cache_dir else (None, None))
        # a damaged entry, or a bare <key>.json of the old format, is set aside with a warning and scored again
        if cached is not None and cache.lookup(cached, legacy=cached.with_name(f"{cached.name}.json")) is not None:
            results[name] = json.loads((cached / SCORES).read_text())
            log.info("%s: scores read from %s", name, cached)
        else:
            todo[name] = (cached, recipe)

    for name in todo:
        models[name].to(device).eval()

    def score(item: tuple[str, str]) -> dict[str, Any]:
        """One part of one model's scores: ``task`` (test and validation points) or ``language``."""
        name, part = item
        model = models[name]
        if part == "language":
            return evaluate_language(model, tokenizer, probe, lang, reference=host, mlm=mlm)
        scores = evaluate_task(model, tokenizer, task, int(settings.task_points), int(settings.batch_size),
                               int(settings.max_new_tokens), return_outputs=True,
                               first_line_only=bool(settings.first_line_only), n_samples=int(settings.n_samples))
        if int(settings.validation_points) > 0:
            val = evaluate_task(model, tokenizer, task, int(settings.validation_points), int(settings.batch_size),
                                int(settings.max_new_tokens), first_line_only=bool(settings.first_line_only),
                                split="validation")
            scores.update({f"val_{k}": val[k] for k in ("f_H", "f_S", "fact", "n")})
        return scores

    # models side by side, one single-thread process each, as many as the job has threads (evaluation/parallel.py);
    # each model's task and language scores are separate items, the longer language ones first, so that the
    # workers finish together
    names = list(todo)
    parts = ["language", "task"] if probe is not None else ["task"]
    items = [(name, part) for part in parts for name in names]
    done = dict(zip(items, map_forked(score, items, workers_for(len(items), device)), strict=True))
    for name in names:
        scores = {**done[(name, "task")], **done.get((name, "language"), {})}
        log.info("%s: %s", name, {k: v for k, v in scores.items() if k != "samples"}, extra=FILE_ONLY)
        results[name] = scores
        cached, recipe = todo[name]
        if cached is not None:
            cache.store(cached, lambda folder, s=scores: write_json_atomic(folder / SCORES, s), recipe=recipe)
    results = {name: results[name] for name in models}  # in the order given
    return results

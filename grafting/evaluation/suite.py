"""Evaluate a set of models (Tuned, Grafted, Vanilla, Host) on the task and language metrics."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from grafting.artifacts import model_fingerprint, write_json_atomic
from grafting.data.modular import task_from_config
from grafting.evaluation.language_eval import build_probe, evaluate_language, load_mlm
from grafting.evaluation.task_eval import evaluate_task
from grafting.metrics import language as language_metrics
from grafting.metrics import task as task_metrics
from grafting.provenance import package_versions

log = logging.getLogger(__name__)


def eval_device(cfg) -> torch.device:
    name = cfg.evaluation.get("device", "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def score_cache_path(cfg, model: torch.nn.Module, host_fingerprint: str | None, language: bool,
                     device: torch.device, cache_dir: Path) -> Path:
    """``<cache>/scores/<key>.json``: the key hashes the model's and the host's weights, every setting
    that shapes the scores (evaluation, task, corpus, device type) and the code that computes them
    (each metric family's ``SCORE_VERSION``, torch's and transformers' versions), so a hit is the same computation."""
    settings = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("evaluation", "task", "corpus")}
    settings["evaluation"].pop("cache", None)
    versions = package_versions()
    code = {"task": task_metrics.SCORE_VERSION, "language": language_metrics.SCORE_VERSION if language else None,
            "torch": versions["torch"], "transformers": versions["transformers"]}
    payload = {"model": model_fingerprint(model), "host": host_fingerprint if language else None,
               "language": language, "device": device.type, "code": code, **settings}
    return cache_dir / "scores" / f"{hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]}.json"


def evaluate_models(cfg, models: dict[str, torch.nn.Module], tokenizer, host: torch.nn.Module,
                    language: bool = True, cache_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Task metrics on the test points and (optionally) language metrics for every model in ``models``.

    With ``cache_dir``, a model whose weights were already scored under the same settings is read
    back instead of re-evaluated (in a sweep, Tuned, Vanilla and Host repeat in every job).
    """
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
    host_fingerprint = model_fingerprint(host) if cache_dir and language else None  # once, not per model
    for name, model in models.items():
        cached = score_cache_path(cfg, model, host_fingerprint, language, device, cache_dir) if cache_dir else None
        if cached is not None and cached.is_file():
            results[name] = json.loads(cached.read_text())
            log.info("%s: scores read from %s", name, cached)
            continue
        model.to(device).eval()
        scores = evaluate_task(model, tokenizer, task, int(ev.task_points), int(ev.batch_size),
                               int(ev.max_new_tokens), return_outputs=True,
                               first_line_only=bool(ev.get("first_line_only", True)),
                               n_samples=int(ev.get("n_samples", 8)))
        if probe is not None:
            scores.update(evaluate_language(model, tokenizer, probe, lang, reference=host, mlm=mlm))
        log.info("%s: %s", name, {k: v for k, v in scores.items() if k != "samples"})
        results[name] = scores
        if cached is not None:
            write_json_atomic(cached, scores)
    return results

"""Stage ``transplant``: training-free transplantation (seed 004) swept over K, with controls.

Target = ``cfg.donor``. Source = ``transplant.source``: ``sft`` (the target after full-model SFT on the task,
the offline default), ``host`` (``cfg.host``), a folder holding a saved model, or a model spec dict. The
task workload runs through both; linear modules are ranked by the difference of their last-token mean
|activation|; for every K and alpha the top-K, bottom-K, random-K (several seeds) and all modules are
transplanted in turn (restored after each), and task score, TIR, Recovery and KL to the target on general
text are measured.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from grafting.data.datamodule import build_datamodule, text_documents
from grafting.data.datasets import TextChunkDataset
from grafting.data.modular import task_from_config
from grafting.errors import ConfigError
from grafting.evaluation.suite import eval_device
from grafting.evaluation.task_eval import evaluate_task
from grafting.models.loading import load_model, same_tokenizer
from grafting.modules.causal_lm import CausalLMModule
from grafting.run_context import RunContext
from grafting.transplant import (
    SCORERS,
    candidate_modules,
    general_text_kl,
    rank_modules,
    record_activations,
    score_modules,
    select,
    transplanted,
)
from grafting.transplant.report import TASK_KEYS, plot_sweep, record, summary_rows, sweep_markdown

log = logging.getLogger(__name__)
FIGURE = "transplant_k.png"


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the ``transplant.*`` key before any model is loaded."""
    tp = cfg.transplant
    if tp.metric not in TASK_KEYS:
        raise ConfigError("transplant.metric", f"unknown metric {tp.metric!r}; allowed: {', '.join(TASK_KEYS)}.")
    if tp.score not in SCORERS:
        raise ConfigError("transplant.score", f"unknown scorer {tp.score!r}; allowed: {', '.join(sorted(SCORERS))}.")
    for key, minimum in (("k_list", 1), ("control_seeds", 0)):
        values = list(tp[key])
        if not values or any(not isinstance(v, int) or v < minimum for v in values):
            raise ConfigError(f"transplant.{key}", f"must be a non-empty list of ints >= {minimum}, got {values}.")
    alphas = list(tp.alphas)
    if not alphas or any(not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0 for a in alphas):
        raise ConfigError("transplant.alphas", f"must be a non-empty list of numbers in [0, 1], got {alphas}.")
    for key in ("eval_points", "n_analysis_prompts", "kl_texts", "kl_seq_len"):
        if int(tp[key]) < 1:
            raise ConfigError(f"transplant.{key}", f"must be >= 1, got {tp[key]}.")
    if int(tp.eval_points) > int(cfg.task.test_size):
        raise ConfigError("transplant.eval_points", f"{tp.eval_points} exceeds the {cfg.task.test_size} test points "
                                                    "(task.test_size).")
    if int(tp.generate_steps) < 0:
        raise ConfigError("transplant.generate_steps", f"must be >= 0, got {tp.generate_steps}.")
    src = tp.source
    if isinstance(src, str) and src not in ("sft", "host") and not Path(src).is_dir():
        raise ConfigError("transplant.source", f"{src!r} is neither 'sft', 'host', a model spec nor a folder.")
    if src == "sft" and int(tp.source_sft_steps) < 1:
        raise ConfigError("transplant.source_sft_steps", f"must be >= 1, got {tp.source_sft_steps}.")


def sft_source(ctx: RunContext, target: torch.nn.Module, tokenizer) -> torch.nn.Module:
    """A copy of ``target`` with every weight fine-tuned on the task's train split (loss on the answer)."""
    cfg, tp = ctx.cfg, ctx.cfg.transplant
    loader = OmegaConf.merge(cfg.dataloader, {"kind": "mod", "batch_size": int(tp.source_sft_batch_size)})
    data = build_datamodule(loader, cfg.task, tokenizer, int(cfg.seed), with_val=False)
    steps = int(tp.source_sft_steps)
    ctx.reseed()
    module = CausalLMModule(copy.deepcopy(target).train(), lr=float(tp.source_sft_lr),
                            weight_decay=float(tp.source_sft_weight_decay),
                            warmup_steps=min(int(tp.source_sft_warmup), steps), max_steps=steps)
    ctx.trainer(max_steps=steps, limit_val_batches=0).fit(module, datamodule=data)
    return module.model.eval()


def load_source(ctx: RunContext, target: torch.nn.Module, tokenizer) -> tuple[torch.nn.Module, str]:
    """The source model and a one-line description of where it came from."""
    cfg, src = ctx.cfg, ctx.cfg.transplant.source
    if src == "sft":
        model = sft_source(ctx, target, tokenizer)
        desc = f"{cfg.donor.name} after {cfg.transplant.source_sft_steps} steps of full-model SFT on the task"
        if cfg.transplant.save_source:  # lets a later run reuse it with transplant.source=<this folder>
            model.save_pretrained(ctx.run_dir / "source")
            tokenizer.save_pretrained(ctx.run_dir / "source")
        return model, desc
    if src == "host":
        spec, key, desc = cfg.host, "host", f"host {cfg.host.name}"
    elif isinstance(src, str):
        spec, key, desc = {"source": "local", "path": src}, "transplant.source", f"saved model {src}"
    else:
        spec, key, desc = src, "transplant.source", f"{src.get('name', src.get('source'))}"
    model, src_tokenizer = load_model(spec, key, ctx.cache_dir)
    if not same_tokenizer(tokenizer, src_tokenizer):
        raise ConfigError("transplant.source", "source and target use different tokenizers; the task workload "
                                               "must be the same tokens in both.")
    return model, desc


def kl_chunks(cfg: DictConfig, tokenizer) -> torch.Tensor:
    """Held-out general-text chunks (``transplant.kl_texts`` x ``transplant.kl_seq_len`` tokens)."""
    docs = text_documents(cfg.corpus, "validation")
    return TextChunkDataset(docs, tokenizer, int(cfg.transplant.kl_seq_len),
                            max_chunks=int(cfg.transplant.kl_texts)).chunks


def mean_kl(reference: torch.nn.Module, model: torch.nn.Module, chunks: torch.Tensor, batch_size: int) -> float:
    """Token-weighted KL(reference || model) over ``chunks`` in batches (every position is a real token)."""
    total, count = 0.0, 0
    for start in range(0, len(chunks), batch_size):
        ids = chunks[start:start + batch_size]
        total += general_text_kl(reference, model, ids) * ids.numel()
        count += ids.numel()
    return total / count


class Sweep:
    """Evaluates transplanted variants of the target, memoised on (module set, alpha).

    Memoising makes K >= #candidates (top = bottom = random = all) and repeated random draws free, and
    guarantees identical conditions report identical numbers.
    """

    def __init__(self, cfg: DictConfig, target, source, reference, tokenizer, chunks: torch.Tensor):
        self.cfg, self.tp = cfg, cfg.transplant
        self.target, self.source, self.reference = target, source, reference
        self.tokenizer, self.chunks = tokenizer, chunks
        self.task = task_from_config(cfg.task)
        self._cache: dict[tuple[frozenset[str], float], tuple[dict[str, float], float]] = {}

    def task_scores(self, model) -> dict[str, float]:
        tp = self.tp
        scores = evaluate_task(model, self.tokenizer, self.task, int(tp.eval_points), int(tp.eval_batch_size),
                               int(tp.max_new_tokens))
        return {m: float(scores[m]) for m in TASK_KEYS}

    def evaluate(self, names: list[str], alpha: float) -> tuple[dict[str, float], float]:
        key = (frozenset(names), float(alpha))
        if key not in self._cache:
            with transplanted(self.target, self.source, names, alpha):
                scores = self.task_scores(self.target)
                kl = mean_kl(self.reference, self.target, self.chunks, int(self.tp.kl_batch_size))
            self._cache[key] = (scores, kl)
        return self._cache[key]

    @property
    def n_evaluations(self) -> int:
        """Distinct transplanted variants evaluated so far."""
        return len(self._cache)


def analyse(cfg: DictConfig, target, source, tokenizer) -> dict[str, Any]:
    """Record both models on the task workload, score and rank the candidate modules."""
    tp = cfg.transplant
    names = candidate_modules(source, target)
    prompts = [ex.prompt for ex in task_from_config(cfg.task).split("train")[: int(tp.n_analysis_prompts)]]
    kw = dict(names=names, tokenizer=tokenizer, batch_size=int(tp.analysis_batch_size),
              generate_steps=int(tp.generate_steps))
    acts = {"source": record_activations(source, prompts, **kw), "target": record_activations(target, prompts, **kw)}
    scores = score_modules(acts["source"], acts["target"], method=tp.score)
    return {"candidates": names, "activations": acts, "module_scores": scores, "ranked": rank_modules(scores),
            "n_prompts": len(prompts)}


def run_sweep(sweep: Sweep, ranked: list[str], target_scores: dict, source_scores: dict) -> list[dict]:
    """Every (alpha, K, selection[, seed]) condition, as report records."""
    tp = sweep.tp
    records = []

    def add(selection: str, k: int, alpha: float, seed: int | None) -> None:
        names = select(selection, ranked, k, seed=seed, strict=False)
        scores, kl = sweep.evaluate(names, alpha)
        records.append(record(selection, k, len(names), alpha, seed, names, scores, kl, target_scores,
                              source_scores))
        log.info("alpha=%s K=%s %s%s: %s, KL %.4f", alpha, k, selection, "" if seed is None else f"[{seed}]",
                 scores, kl)

    for alpha in (float(a) for a in tp.alphas):
        for k in (int(k) for k in tp.k_list):
            add("top", k, alpha, None)
            for seed in tp.control_seeds:
                add("random", k, alpha, int(seed))
            add("bottom", k, alpha, None)
        add("all", len(ranked), alpha, None)
    return records


def run(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)
    ctx = RunContext.from_config(cfg)
    try:
        tp, timings = cfg.transplant, {}
        start = time.perf_counter()
        target, tokenizer = load_model(cfg.donor, "donor", ctx.cache_dir)
        timings["target_s"] = time.perf_counter() - start
        start = time.perf_counter()
        source, source_desc = load_source(ctx, target, tokenizer)
        device = eval_device(cfg)
        target.to(device).eval()
        source.to(device).eval()
        reference = copy.deepcopy(target)  # untouched copy: the target itself is modified during transplants
        timings["source_s"] = time.perf_counter() - start  # includes SFT

        start = time.perf_counter()
        analysis = analyse(cfg, target, source, tokenizer)
        timings["analysis_s"] = time.perf_counter() - start

        start = time.perf_counter()
        sweep = Sweep(cfg, target, source, reference, tokenizer, kl_chunks(cfg, tokenizer))
        target_scores, source_scores = sweep.task_scores(target), sweep.task_scores(source)
        print(f"target {target_scores}\nsource {source_scores}", flush=True)
        records = run_sweep(sweep, analysis["ranked"], target_scores, source_scores)
        timings["sweep_s"] = time.perf_counter() - start
        timings["evaluations"] = sweep.n_evaluations + 2  # + target and source

        rows = summary_rows(records, tp.metric)
        meta = {"source": source_desc, "target": cfg.donor.name, "n_candidates": len(analysis["candidates"]),
                "score": tp.score, "eval_points": int(tp.eval_points), "ranked": analysis["ranked"]}
        markdown = sweep_markdown(rows, tp.metric, target_scores, source_scores, meta)
        print(markdown, flush=True)
        figure = plot_sweep(rows, tp.metric, target_scores, source_scores, ctx.run_dir / FIGURE)
        for row in rows:
            prefix = f"a{row['alpha']}/{row['selection']}/k{row['k']}/"
            ctx.log_metrics({f"{prefix}{c}": row[c]["mean"] for c in ("score", "tir", "recovery", "kl")
                             if row[c]["mean"] is not None}, prefix="transplant/")
        results = {"stage": "transplant", "metric": tp.metric, "target": target_scores, "source": source_scores,
                   "meta": meta, "analysis": analysis, "summary": rows, "runs": records, "figure": figure.name,
                   "timings": {k: round(v, 1) for k, v in timings.items()},
                   "config": OmegaConf.to_container(cfg, resolve=True)}
        ctx.save_results(results, markdown)
        return results
    finally:
        ctx.finish()

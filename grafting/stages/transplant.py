"""Stage ``transplant``: training-free transplantation (seed 004) swept over K, with controls.

``transplant.pair`` picks the models. ``generation``: target = the tiny Llama predecessor, source = its
successor (trained longer, on more data); ``instruct``: target = the same predecessor (the base), source =
the base after SFT on a mix of tasks (see :mod:`grafting.pretraining.transplant_pair`); the task is their fact
table. ``pair: null`` is the setup for any models: target = ``cfg.host`` (the model that receives, as
everywhere), source = ``transplant.source`` (``sft``: the host after SFT on the task; ``donor``: ``cfg.donor``;
a folder or a model spec), task = ``cfg.task``.

The task workload runs through both models; the linear modules are ranked by each scorer of
``transplant.scorers``. For every K and alpha the top-K and bottom-K of each scorer, random-K (several
seeds) and all modules are transplanted in turn (restored after each), then every module is blended at each
``blend_alphas``; task score, TIR, Recovery and KL to the target on general text are measured.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from grafting import names
from grafting.data.datamodule import build_datamodule, text_documents
from grafting.data.datasets import TextChunkDataset
from grafting.data.key_facts import KeyFacts
from grafting.data.modular import ModularAddition, task_from_config
from grafting.errors import ConfigError
from grafting.evaluation.parallel import map_forked, workers_for
from grafting.evaluation.suite import eval_device
from grafting.evaluation.task_eval import evaluate_task
from grafting.models.loading import load_model, same_tokenizer
from grafting.modules.causal_lm import CausalLMModule
from grafting.pretraining.transplant_pair import PairRecipe, fact_task, load_role
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
from grafting.transplant.draws import top_k_against_draws
from grafting.transplant.figure import plot_sweep
from grafting.transplant.paired import paired_l1
from grafting.transplant.report import TASK_KEYS, record, scorer_verdicts, summary_rows, sweep_markdown
from grafting.transplant.shared import KLReference

log = logging.getLogger(__name__)
FIGURE = "transplant_k.png"
PAIRS = names.TRANSPLANT_PAIRS
PAIR_SOURCES = {"generation": "successor", "instruct": "instruct"}
ALL_SCORERS = (*names.PAIRED_SCORERS, *SCORERS)


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the ``transplant.*`` key before any model is loaded."""
    tp = cfg.transplant
    if tp.metric not in TASK_KEYS:
        raise ConfigError("transplant.metric", f"unknown metric {tp.metric!r}; allowed: {', '.join(TASK_KEYS)}.")
    scorers = list(tp.scorers)
    if not scorers or any(s not in ALL_SCORERS for s in scorers):
        raise ConfigError("transplant.scorers", f"must be a non-empty list of {', '.join(ALL_SCORERS)}; got {scorers}.")
    if tp.pair is not None and tp.pair not in PAIRS:
        raise ConfigError("transplant.pair", f"unknown pair {tp.pair!r}; allowed: {', '.join(PAIRS)} or null.")
    for key, minimum in (("k_list", 1), ("control_seeds", 0)):
        values = list(tp[key])
        if not values or any(not isinstance(v, int) or v < minimum for v in values):
            raise ConfigError(f"transplant.{key}", f"must be a non-empty list of ints >= {minimum}, got {values}.")
    for key, allow_empty in (("alphas", False), ("blend_alphas", True)):
        alphas = list(tp[key])
        if (not alphas and not allow_empty) or any(not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0
                                                   for a in alphas):
            raise ConfigError(f"transplant.{key}", f"must be a list of numbers in [0, 1], got {alphas}.")
    for key in ("eval_points", "n_analysis_prompts", "kl_texts", "kl_seq_len"):
        if int(tp[key]) < 1:
            raise ConfigError(f"transplant.{key}", f"must be >= 1, got {tp[key]}.")
    for key in ("single_draws", "matched_draws"):
        if int(tp.get(key, 0)) < 0:
            raise ConfigError(f"transplant.{key}", f"must be >= 0, got {tp[key]}.")
    points = int(tp.models.task.n_keys) if tp.pair else int(cfg.task.test_size)
    if int(tp.eval_points) > points:
        raise ConfigError("transplant.eval_points", f"{tp.eval_points} exceeds the task's {points} test points.")
    if int(tp.generate_steps) < 0:
        raise ConfigError("transplant.generate_steps", f"must be >= 0, got {tp.generate_steps}.")
    src = tp.source
    if tp.pair is None and src == "host":
        raise ConfigError("transplant.source", "the host is the target (it receives the modules); take the source "
                                               "from the donor with transplant.source=donor.")
    if tp.pair is None and isinstance(src, str) and src not in ("sft", "donor") and not Path(src).is_dir():
        raise ConfigError("transplant.source", f"{src!r} is neither 'sft', 'donor', a model spec nor a folder.")
    if tp.pair is None and src == "sft" and int(tp.source_sft_steps) < 1:
        raise ConfigError("transplant.source_sft_steps", f"must be >= 1, got {tp.source_sft_steps}.")


def recipe_from_config(cfg: DictConfig) -> PairRecipe:
    return PairRecipe.from_dict(OmegaConf.to_container(cfg.transplant.models, resolve=True))


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
    """The source model of ``pair: null`` and a one-line description of where it came from."""
    cfg, src = ctx.cfg, ctx.cfg.transplant.source
    if src == "sft":
        model = sft_source(ctx, target, tokenizer)
        desc = f"{cfg.host.name} after {cfg.transplant.source_sft_steps} steps of full-model SFT on the task"
        if cfg.transplant.save_source:  # lets a later run reuse it with transplant.source=<this folder>
            model.save_pretrained(ctx.run_dir / "source")
            tokenizer.save_pretrained(ctx.run_dir / "source")
        return model, desc
    if src == "donor":
        spec, key, desc = cfg.donor, "donor", f"donor {cfg.donor.name}"
    elif isinstance(src, str):
        spec, key, desc = {"source": "local", "path": src}, "transplant.source", f"saved model {src}"
    else:
        spec, key, desc = src, "transplant.source", f"{src.get('name', src.get('source'))}"
    model, src_tokenizer = load_model(spec, key, ctx.cache_dir)
    if not same_tokenizer(tokenizer, src_tokenizer):
        raise ConfigError("transplant.source", "source and target use different tokenizers; the task workload "
                                               "must be the same tokens in both.")
    return model, desc


def load_models(ctx: RunContext) -> dict[str, Any]:
    """Target, source, tokenizer, task and descriptions for ``transplant.pair`` (or the ``pair: null`` setup)."""
    cfg, pair = ctx.cfg, ctx.cfg.transplant.pair
    if pair is None:
        target, tokenizer = load_model(cfg.host, "host", ctx.cache_dir)
        source, source_desc = load_source(ctx, target, tokenizer)
        return {"target": target, "source": source, "tokenizer": tokenizer, "task": task_from_config(cfg.task),
                "target_desc": cfg.host.name, "source_desc": source_desc}
    recipe = recipe_from_config(cfg)
    target, tokenizer = load_role(recipe, "predecessor", ctx.cache_dir)
    role = PAIR_SOURCES[pair]
    source, _ = load_role(recipe, role, ctx.cache_dir)
    descs = {"successor": "successor (the predecessor trained longer, on the corpus and every fact)",
             "instruct": "instruct (the base after SFT on facts + word reversal + word copying)"}
    return {"target": target, "source": source, "tokenizer": tokenizer, "task": fact_task(recipe),
            "target_desc": f"predecessor / base (knows {recipe.known_fraction:.0%} of the facts)",
            "source_desc": descs[role]}


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

    Memoising makes K >= #candidates (top = bottom = random = all) and repeated draws free, and guarantees
    identical conditions report identical numbers.
    """

    def __init__(self, tp: DictConfig, task: ModularAddition | KeyFacts, target, source, tokenizer,
                 chunks: torch.Tensor):
        self.tp, self.task = tp, task
        self.target, self.source = target, source
        self.tokenizer, self.chunks = tokenizer, chunks
        # the untouched target's side of every KL, computed once (the target is modified in place below)
        self.reference = KLReference.capture(target, chunks, int(tp.kl_batch_size))
        # (module set, alpha) -> task scores, KL (None until asked for) and the KL's variance over texts
        self._cache: dict[tuple[frozenset[str], float], dict[str, Any]] = {}

    def task_scores(self, model) -> dict[str, float]:
        tp = self.tp
        scores = evaluate_task(model, self.tokenizer, self.task, int(tp.eval_points), int(tp.eval_batch_size),
                               int(tp.max_new_tokens))
        return {m: float(scores[m]) for m in TASK_KEYS}

    def evaluate(self, names: list[str], alpha: float, kl: bool = True) -> dict[str, Any]:
        """``{"scores", "kl", "kl_item_var"}`` of the target with ``names`` transplanted at ``alpha``;
        ``kl=False`` (single random draws, scored on the task only) leaves the KL out unless already known."""
        key = (frozenset(names), float(alpha))
        entry = self._cache.get(key)
        if _missing(entry, kl):
            self._cache[key] = self._evaluate_now(names, alpha, kl, entry)
        return self._cache[key]

    def evaluate_all(self, conditions: Iterable[tuple[list[str], float, bool]]) -> None:
        """Evaluate every ``(names, alpha, kl)`` not yet known, side by side in forked single-thread workers (one
        per thread of the job's budget: :mod:`grafting.evaluation.parallel`); :meth:`evaluate` then reads them.

        Each worker transplants into its own copy of the target (fork), and each condition is computed as
        :meth:`evaluate` computes it, one thread per op: the numbers do not depend on the number of workers.
        """
        todo: dict[tuple[frozenset[str], float], tuple[list[str], float, bool, dict | None]] = {}
        for modules, alpha, kl in conditions:
            key = (frozenset(modules), float(alpha))
            known = self._cache.get(key)
            if not _missing(known, kl):
                continue
            first = todo.get(key)
            todo[key] = (first[0] if first else modules, float(alpha), kl or bool(first and first[2]), known)
        items = list(todo.values())
        device = next(self.target.parameters()).device
        entries = map_forked(lambda item: self._evaluate_now(*item), items, workers_for(len(items), device))
        self._cache.update(zip(todo, entries, strict=True))

    def _evaluate_now(self, names: list[str], alpha: float, kl: bool, known: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        """One condition's entry, computed now (``known``: its task scores, already measured)."""
        with transplanted(self.target, self.source, names, alpha):
            entry = dict(known) if known else {"scores": self.task_scores(self.target), "kl": None,
                                               "kl_item_var": None}
            if kl:
                mean, per_text = self.reference.kl(self.target)
                entry.update(kl=mean, kl_item_var=float(per_text.var()) if per_text.numel() > 1 else 0.0)
        return entry

    @property
    def n_evaluations(self) -> int:
        """Distinct transplanted variants evaluated so far."""
        return len(self._cache)


def _missing(entry: dict[str, Any] | None, kl: bool) -> bool:
    """A condition is still to evaluate: never evaluated, or its KL is asked for and not known."""
    return entry is None or (kl and entry["kl"] is None)


def analyse(tp: DictConfig, task: ModularAddition | KeyFacts, target, source, tokenizer) -> dict[str, Any]:
    """Record both models on the task workload; score and rank the candidate modules with every scorer."""
    names = candidate_modules(source, target)
    examples = task.split("train")[: int(tp.n_analysis_prompts)]
    prompts = [ex.prompt for ex in examples]
    batch = int(tp.analysis_batch_size)
    module_scores, acts = {}, {}
    if any(s != "l1" for s in tp.scorers):
        kw = dict(names=names, tokenizer=tokenizer, batch_size=batch, generate_steps=int(tp.generate_steps))
        acts = {"source": record_activations(source, prompts, **kw),
                "target": record_activations(target, prompts, **kw)}
    for scorer in tp.scorers:
        if scorer == "l1":  # teacher-forced on prompt + answer: the prompt's last token and every answer step
            answer_tokens = min(len(tokenizer(ex.completion, add_special_tokens=False)["input_ids"])
                                for ex in examples)
            module_scores[scorer] = paired_l1(source, target, [ex.prompt + ex.completion for ex in examples],
                                              names=names, tokenizer=tokenizer, batch_size=batch,
                                              positions=answer_tokens + 1)
        else:
            module_scores[scorer] = score_modules(acts["source"], acts["target"], method=scorer)
    return {"candidates": names, "activations": acts, "module_scores": module_scores,
            "ranked": {s: rank_modules(v) for s, v in module_scores.items()}, "n_prompts": len(prompts)}


def run_sweep(sweep: Sweep, ranked: dict[str, list[str]], target_scores: dict, source_scores: dict) -> list[dict]:
    """Every (alpha, K, selection[, scorer][, seed]) condition, then the blends, as report records.

    The conditions are listed first and evaluated side by side (:meth:`Sweep.evaluate_all`), then reported
    in this order."""
    tp = sweep.tp
    any_ranking = next(iter(ranked.values()))
    conditions = []  # (selection, k, alpha, seed, scorer, modules)

    def add(selection: str, k: int, alpha: float, seed: int | None = None, scorer: str | None = None) -> None:
        rule = "all" if selection == "blend" else selection  # a blend is every module at strength alpha
        modules = select(rule, ranked[scorer] if scorer else any_ranking, k, seed=seed, strict=False)
        conditions.append((selection, k, alpha, seed, scorer, modules))

    for alpha in (float(a) for a in tp.alphas):
        for k in (int(k) for k in tp.k_list):
            for scorer in ranked:
                add("top", k, alpha, scorer=scorer)
            for seed in tp.control_seeds:
                add("random", k, alpha, int(seed))
            for scorer in ranked:
                add("bottom", k, alpha, scorer=scorer)
        add("all", len(any_ranking), alpha)
    for alpha in (float(a) for a in tp.blend_alphas):
        add("blend", len(any_ranking), alpha)

    sweep.evaluate_all((modules, alpha, True) for _, _, alpha, _, _, modules in conditions)
    records = []
    for selection, k, alpha, seed, scorer, modules in conditions:
        out = sweep.evaluate(modules, alpha)
        records.append(record(selection, k, len(modules), alpha, seed, modules, out["scores"], out["kl"], target_scores,
                              source_scores, scorer, kl_item_var=out["kl_item_var"]))
        log.info("alpha=%s K=%s %s%s%s: %s, KL %.4f", alpha, k, selection, f" {scorer}" if scorer else "",
                 "" if seed is None else f"[{seed}]", out["scores"], out["kl"])
    return records


def run_draws(sweep: Sweep, ranked: dict[str, list[str]]) -> dict[float, list[dict]]:
    """Per alpha, each scorer's top-K among single random draws of K modules (and matched draws).

    ``max(single_draws, len(control_seeds))`` draws per K; the first ones are the random-K controls
    (already evaluated), the others are scored on the task only (no KL), which is all a percentile needs.
    The draws are listed by a first pass that scores nothing (they do not depend on the scores), evaluated
    side by side, then placed.
    """
    tp = sweep.tp
    n_random = max(int(tp.single_draws), len(tp.control_seeds))
    ks = [int(k) for k in tp.k_list]
    out = {}
    for alpha in (float(a) for a in tp.alphas):
        listed: list[tuple[list[str], float, bool]] = []

        def note(modules: list[str], alpha: float = alpha, listed: list = listed) -> float:
            listed.append((list(modules), alpha, False))
            return 0.0

        top_k_against_draws(note, ranked, ks, n_random, int(tp.matched_draws))
        sweep.evaluate_all(listed)

        def score(names: list[str], alpha: float = alpha) -> float:
            return sweep.evaluate(names, alpha, kl=False)["scores"][tp.metric]

        out[alpha] = top_k_against_draws(score, ranked, ks, n_random, int(tp.matched_draws))
    return out


def command_line() -> str | None:
    """The ``train.py`` command of this job (its Hydra overrides), for the report; None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return " ".join(["python train.py", *HydraConfig.get().overrides.task])


def run(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)
    ctx = RunContext.from_config(cfg)
    try:
        tp, timings = cfg.transplant, {}
        start = time.perf_counter()
        models = load_models(ctx)
        target, source, tokenizer, task = models["target"], models["source"], models["tokenizer"], models["task"]
        device = eval_device(cfg)
        target.to(device).eval()
        source.to(device).eval()
        timings["models_s"] = time.perf_counter() - start  # includes training on a cache miss

        start = time.perf_counter()
        analysis = analyse(tp, task, target, source, tokenizer)
        timings["analysis_s"] = time.perf_counter() - start

        start = time.perf_counter()
        sweep = Sweep(tp, task, target, source, tokenizer, kl_chunks(cfg, tokenizer))
        target_scores, source_scores = sweep.task_scores(target), sweep.task_scores(source)
        print(f"target {target_scores}\nsource {source_scores}", flush=True)
        records = run_sweep(sweep, analysis["ranked"], target_scores, source_scores)
        timings["sweep_s"] = time.perf_counter() - start
        start = time.perf_counter()
        draws = run_draws(sweep, analysis["ranked"])
        timings["draws_s"] = time.perf_counter() - start
        timings["evaluations"] = sweep.n_evaluations + 2  # + target and source

        rows = summary_rows(records, tp.metric, n_items=int(tp.eval_points), kl_items=len(sweep.chunks),
                            target=target_scores, source=source_scores)
        n_candidates = len(analysis["candidates"])
        meta = {"pair": tp.pair, "source": models["source_desc"], "target": models["target_desc"],
                "n_candidates": n_candidates, "scorers": list(tp.scorers), "eval_points": int(tp.eval_points),
                "ranked": analysis["ranked"], "command": command_line()}
        markdown = sweep_markdown(rows, tp.metric, target_scores, source_scores, meta, draws)
        print(markdown, flush=True)
        alpha = float(tp.alphas[-1])
        figure = plot_sweep(rows, tp.metric, ctx.run_dir / FIGURE, title=f"pair: {tp.pair or 'donor/source'}",
                            alpha=alpha)
        for row in rows:
            prefix = f"a{row['alpha']}/{row['selection']}{'-' + row['scorer'] if row['scorer'] else ''}/k{row['k']}/"
            ctx.log_metrics({f"{prefix}{c}": row[c]["mean"] for c in ("score", "tir", "recovery", "kl")
                             if row[c]["mean"] is not None}, prefix="transplant/")
        results = {"stage": "transplant", "metric": tp.metric, "target": target_scores, "source": source_scores,
                   "meta": meta, "analysis": analysis, "summary": rows, "runs": records, "figure": figure.name,
                   "draws": {str(a): d for a, d in draws.items()},
                   "verdicts": {str(a): scorer_verdicts(rows, a, list(tp.scorers), n_candidates, draws[a])
                                for a in (float(x) for x in tp.alphas)},
                   "timings": {k: round(v, 1) for k, v in timings.items()},
                   "config": OmegaConf.to_container(cfg, resolve=True)}
        ctx.save_results(results, markdown)
        return results
    finally:
        ctx.finish()

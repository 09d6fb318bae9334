"""Equal-budget curves for one skill, part of stage ``skillpack`` when ``skillpack.budget.fractions`` is set.

For every method of ``skillpack.budget.methods`` and every budget (a fraction of the dense delta's
bytes), :func:`grafting.skillpack.budget.choose_for_budget` picks the largest setting that fits; the
pack is saved as ``packs/<task>/<method>@<pct>``, loaded back and scored on the test split. Data-aware
methods use calibration text (the first ``calibration_texts`` distilled training pairs): GPTQ gets each
layer's input Hessian on the tuned model, BitDelta fits its scales to the tuned model's logits. LoRA
trains one adapter per budget at the largest rank that fits, with its learning rate chosen on the
validation split (at the middle budget's rank); adapters trained at the same time share one pass over
the data (:mod:`grafting.skillpack.multi_lora`), one pass per thread of the job's budget, side by side.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch

from grafting import surgery
from grafting.data.skill_example import OnSplit, SkillTask
from grafting.evaluation.parallel import map_forked, workers_for
from grafting.evaluation.skill_eval import evaluate_skill, strip_outputs
from grafting.run_context import RunContext
from grafting.skillpack.bitdelta import distill_scales
from grafting.skillpack.budget import choose_for_budget, dense_bytes, lora_rank_for_budget
from grafting.skillpack.calibration import collect_hessians, prompt_batches
from grafting.skillpack.lora import lora_pack, lora_values_per_rank
from grafting.skillpack.multi_lora import AdapterSpec
from grafting.skillpack.quant import resolve_dtype
from grafting.skillpack.report import gain_kept
from grafting.skillpack.svd import shared_svd
from grafting.stages.skill_learning import Distilled, skill_delta, train_lora_adapters, train_target
from grafting.stages.skillpack_common import save_modules_as_pack

log = logging.getLogger(__name__)


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}pct"


def budget_row(task: str, method: str, fraction: float, level: Any, nbytes: int | None, disk: int | None,
               dense: int, scores: dict[str, Any] | None, base: float, full: float) -> dict[str, Any]:
    """One point of a curve; ``score`` and ``pct_gain`` are NaN when the method cannot fit the budget."""
    score = float("nan") if scores is None else float(scores["score"])
    return {"task": task, "method": method, "budget": fraction, "level": level, "bytes": nbytes,
            "bytes_on_disk": disk, "pct_dense": float("nan") if nbytes is None else 100.0 * nbytes / dense,
            "score": score, "pct_gain": gain_kept(score, base, full) if math.isfinite(score) else float("nan"),
            **({k: v for k, v in scores.items() if k not in ("score", "samples")} if scores else {})}


def budget_curves(ctx: RunContext, target: torch.nn.Module, tokenizer, task: SkillTask, module, data: Distilled,
                  fingerprint: str, base: float, full: float, ev: dict[str, int]) -> list[dict[str, Any]]:
    """Rows ``(method, budget) -> bytes, score, retained gain`` on the test split (see the module doc)."""
    bc = ctx.cfg.skillpack.budget
    fractions = [float(f) for f in bc.fractions]
    methods = [str(m) for m in bc.methods]
    delta = skill_delta(module)
    dense = dense_bytes(delta)
    device = next(target.parameters()).device
    n_cal = int(bc.calibration_texts)
    texts = [p + r for p, r in zip(data.prompts[:n_cal], data.responses[:n_cal], strict=True)]
    batches = prompt_batches(tokenizer, texts, int(bc.calibration_batch_size))
    tuned = module.tuned_model().to(device)
    hessians = collect_hessians(tuned, batches) if any(m.endswith("gptq") for m in methods) else None
    rows = []
    distilled: dict[Any, tuple[dict, dict]] = {}  # BitDelta level -> its distilled pack (the same at every budget)
    with shared_svd():  # one SVD per matrix for every rank of every SVD family and budget
        for method in methods:
            memo: dict = {}  # level -> pack, shared by this method's budgets
            for fraction in fractions:
                rows.append(_budget_point(ctx, target, tokenizer, task, delta, method, fraction, memo, distilled,
                                          hessians if method.endswith("gptq") else None, tuned, batches,
                                          fingerprint, dense, base, full, ev))
    del tuned
    if ctx.cfg.skillpack.lora.enabled:
        rows += lora_curve(ctx, target, tokenizer, task, data, fingerprint, fractions, dense, base, full, ev)
    return rows


def _budget_point(ctx: RunContext, target, tokenizer, task: SkillTask, delta, method: str, fraction: float,
                  memo: dict, distilled: dict, hessians, tuned, batches, fingerprint: str, dense: int, base: float,
                  full: float, ev: dict[str, int]) -> dict[str, Any]:
    """One method at one budget: the largest fitting level, saved, loaded back and scored on test."""
    bc = ctx.cfg.skillpack.budget
    choice = choose_for_budget(delta, method, fraction, hessians, memo)
    if choice.compressed is None:
        return budget_row(task.name, method, fraction, None, None, None, dense, None, base, full)
    compressed, extra = choice.compressed, {}
    if method == "bitdelta" and int(bc.bitdelta_steps) > 0:
        if choice.level not in distilled:  # distillation is deterministic: a budget with the same level reuses it
            distilled[choice.level] = distill_scales(target, tuned, compressed, batches,
                                                     steps=int(bc.bitdelta_steps), lr=float(bc.bitdelta_lr))
        compressed, extra = distilled[choice.level]
    pack, disk, _ = save_modules_as_pack(
        ctx, compressed, task.name, f"{method}@{_pct(fraction)}", fingerprint,
        {"budget": fraction, "level": choice.level, "policy": choice.policy, **extra})
    scores = strip_outputs(evaluate_skill(target, tokenizer, task, packs=pack, fingerprint=fingerprint, **ev))
    log.info("%s %s @ %.0f%%: level %s, %d bytes, score %.3f", task.name, method, 100 * fraction,
             choice.level, choice.nbytes, scores["score"])
    return budget_row(task.name, method, fraction, choice.level, choice.nbytes, disk, dense, scores, base, full)


def lora_curve(ctx: RunContext, target: torch.nn.Module, tokenizer, task: SkillTask, data: Distilled,
               fingerprint: str, fractions: list[float], dense: int, base: float, full: float,
               ev: dict[str, int]) -> list[dict[str, Any]]:
    """LoRA at the largest rank within each budget; its learning rate picked on validation once.

    The learning rate is chosen at the middle budget's rank among ``skillpack.lora.lrs`` (validation
    score); the other budgets' ranks are then trained at the chosen rate. With SFT on ``nn.Linear``
    targets the adapters of each step share one pass over the data (:func:`train_lora_adapters`);
    otherwise each is a separate peft run, as before.
    """
    lo = ctx.cfg.skillpack.lora
    per_value = torch.tensor([], dtype=resolve_dtype(str(lo.dtype))).element_size()
    per_rank = lora_values_per_rank(target, surgery.architecture(target).lora_targets)
    ranks = {f: lora_rank_for_budget(int(f * dense), per_rank, per_value) for f in fractions}
    steps = int(lo.steps) if lo.get("steps") is not None else int(ctx.cfg.skill.target_sft.steps)
    alpha_over_r = int(lo.alpha_over_r)
    lrs = [float(x) for x in (lo.get("lrs") or [lo.lr])]
    fitting = [f for f in fractions if ranks[f] > 0]
    batched = _batched_lora_ok(ctx, target)

    def train(pairs: list[tuple[int, float]], phase: str) -> dict[tuple[int, float], dict]:
        """(rank, lr) -> LoRA factors as pack entries."""
        if batched:
            return train_adapters_side_by_side(ctx, target, tokenizer, data, pairs, alpha_over_r, steps, phase)
        return {(r, lr): lora_pack(train_target(ctx, target, tokenizer, data, method="lora", lora_r=r,
                                                lora_alpha=alpha_over_r * r, lr=lr, steps=steps,
                                                phase=f"{phase}_r{r}_lr{lr:g}").model, str(lo.dtype))
                for r, lr in pairs}

    best_lr = lrs[0]
    trained: dict[tuple[int, float], dict] = {}  # (rank, lr) -> LoRA factors, so the chosen run is reused
    if len(lrs) > 1 and fitting:
        mid = ranks[fitting[len(fitting) // 2]]
        val = OnSplit(task, "val")
        val_ev = {**ev, "n_points": int(ctx.cfg.skill.n_val)}
        trained = train([(mid, lr) for lr in lrs], "lora_val")
        chosen = {lr: evaluate_skill(target, tokenizer, val, packs=trained[(mid, lr)], **val_ev)["score"]
                  for lr in lrs}
        best_lr = max(lrs, key=lambda lr: chosen[lr])
        log.info("%s lora: validation score by lr %s -> lr %g", task.name, chosen, best_lr)
    todo = list(dict.fromkeys((ranks[f], best_lr) for f in fitting if (ranks[f], best_lr) not in trained))
    if todo:
        trained.update(train(todo, "lora"))
    rows = []
    for fraction in fractions:
        rank = ranks[fraction]
        if rank == 0:
            rows.append(budget_row(task.name, "lora", fraction, None, None, None, dense, None, base, full))
            continue
        modules = trained[(rank, best_lr)]
        nbytes = sum(c.nbytes for c in modules.values())
        pack, disk, _ = save_modules_as_pack(ctx, modules, task.name, f"lora@{_pct(fraction)}", fingerprint,
                                             {"budget": fraction, "rank": rank, "lr": best_lr})
        scores = strip_outputs(evaluate_skill(target, tokenizer, task, packs=pack, fingerprint=fingerprint, **ev))
        rows.append(budget_row(task.name, "lora", fraction, {"rank": rank, "lr": best_lr}, nbytes, disk, dense,
                               scores, base, full))
    return rows


def adapter_groups(pairs: list[tuple[int, float]], workers: int) -> list[list[tuple[int, float]]]:
    """``pairs`` dealt round-robin into at most ``workers`` non-empty groups, each trained in one pass."""
    return [group for group in (pairs[i::workers] for i in range(max(1, workers))) if group]


def train_adapters_side_by_side(ctx: RunContext, target: torch.nn.Module, tokenizer, data: Distilled,
                                pairs: list[tuple[int, float]], alpha_over_r: int, steps: int, phase: str
                                ) -> dict[tuple[int, float], dict]:
    """``(rank, lr) -> LoRA factors`` as pack entries: the adapters in one pass per group, the groups side by side.

    On a CPU job with a budget of ``W`` threads the adapters are dealt into ``W`` groups, each trained in a
    forked single-thread worker (:mod:`grafting.evaluation.parallel`): a tiny model's ops are too short to
    split over threads, while separate passes run side by side. Each adapter still sees its own
    initialisation, batches and schedule, so it equals its separate run to float tolerance in any group
    (``tests/test_skillpack_multi_lora.py``). A forked worker trains without the job's loggers (a W&B run
    must not be written from two processes); with one group, training stays in this process, as before.
    """
    dtype = str(ctx.cfg.skillpack.lora.dtype)
    groups = adapter_groups(pairs, workers_for(len(pairs), next(target.parameters()).device))

    def train_group(group: list[tuple[int, float]]) -> dict[tuple[int, float], dict]:
        specs = [AdapterSpec(r, alpha_over_r * r, lr) for r, lr in group]
        run, stage = ctx, phase
        if len(groups) > 1:  # its own checkpoint folder per group, no loggers in a forked worker
            run = dataclasses.replace(ctx, loggers=[])
            stage = phase + "_" + "_".join(f"r{r}-lr{lr:g}" for r, lr in group)
        model = train_lora_adapters(run, target, tokenizer, data, specs, steps, stage)
        return {pair: model.pack(i, dtype) for i, pair in enumerate(group)}

    if len(groups) == 1:
        return train_group(groups[0])
    return {pair: factors for done in map_forked(train_group, groups, len(groups)) for pair, factors in done.items()}


def _batched_lora_ok(ctx: RunContext, target: torch.nn.Module) -> bool:
    """One pass for several adapters needs SFT only and ``nn.Linear`` targets (not GPT-2's Conv1D)."""
    if ctx.cfg.skill.dpo.enabled or not ctx.cfg.skillpack.lora.get("batched", True):
        return False
    targets = set(surgery.architecture(target).lora_targets)
    return all(type(m) is torch.nn.Linear for n, m in target.named_modules() if n.rsplit(".", 1)[-1] in targets)

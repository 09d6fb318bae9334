"""Stage ``skillpack_continual``: learn tasks A, B, C in sequence without forgetting.

SkillPacks: each task is learned from the *same* base target and stored as its own pack, so
learning C cannot change A's weights; A scored with its pack after C must equal A right after A,
exactly (checked on the generated texts, not only the score). A router over all packs picks the
pack per prompt. Baseline: sequential full fine-tuning A -> B -> C of one model on the same
distilled data, which overwrites A.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import OmegaConf

from grafting.errors import ConfigError
from grafting.evaluation.skill_eval import evaluate_routed, evaluate_skill, strip_outputs
from grafting.evaluation.suite import eval_device
from grafting.models.loading import load_model
from grafting.plain import plain
from grafting.run_context import RunContext
from grafting.skillpack.pack import SkillPack, model_fingerprint
from grafting.skillpack.report import score_table
from grafting.skillpack.routers import build_router
from grafting.stages.skill_learning import distill, skill_delta, train_source, train_target
from grafting.stages.skillpack_common import (
    check_config,
    eval_kwargs,
    make_pack,
    place_models,
    router_prompts,
)

log = logging.getLogger(__name__)


def continual(ctx: RunContext, target: torch.nn.Module, tokenizer, source: torch.nn.Module, source_tokenizer,
              tasks: dict, names: list[str]) -> dict[str, Any]:
    """Runs both regimes over ``names`` in order; returns scores per step, outputs and the invariant check."""
    cfg = ctx.cfg
    ev = eval_kwargs(cfg)
    fingerprint = model_fingerprint(target)
    method = str(cfg.skillpack.default)
    packs: dict[str, SkillPack] = {}
    right_after: dict[str, dict[str, Any]] = {}
    pack_steps: dict[str, dict[str, float]] = {}
    seq_steps: dict[str, dict[str, float]] = {}
    base = {n: strip_outputs(evaluate_skill(target, tokenizer, tasks[n], **ev)) for n in names}
    sequential = target
    for name in names:
        data = distill(ctx, tasks[name], train_source(ctx, source, source_tokenizer, tasks[name]), source_tokenizer,
                       target, tokenizer)
        module = train_target(ctx, target, tokenizer, data)  # always from the base: packs never interfere
        packs[name], _, _ = make_pack(ctx, skill_delta(module), name, method, fingerprint)
        del module
        scored = {n: evaluate_skill(target, tokenizer, tasks[n], packs=packs[n], fingerprint=fingerprint, **ev)
                  for n in packs}
        right_after[name] = scored[name]
        pack_steps[f"after {name}"] = {n: s["score"] for n, s in scored.items()}
        # the baseline keeps training the same model: A -> B -> C
        device = next(target.parameters()).device
        sequential = train_target(ctx, sequential, tokenizer, data, phase="sequential").tuned_model().to(device)
        seq_steps[f"after {name}"] = {n: evaluate_skill(sequential, tokenizer, tasks[n], **ev)["score"]
                                      for n in names}
        log.info("after %s: packs %s, sequential %s", name, pack_steps[f"after {name}"], seq_steps[f"after {name}"])
    final = {n: evaluate_skill(target, tokenizer, tasks[n], packs=packs[n], fingerprint=fingerprint, **ev)
             for n in names}
    rc = cfg.skillpack.fusion.router
    prompts = router_prompts({n: tasks[n] for n in names}, rc)
    router = build_router("learned", names, **plain(rc))
    fit = router.fit(target, tokenizer, packs, prompts, seed=int(cfg.seed), fingerprint=fingerprint)
    router.save(ctx.run_dir / "router", overwrite=bool(cfg.get("overwrite", False)))
    routed = {n: evaluate_routed(target, tokenizer, tasks[n], router, packs, fingerprint=fingerprint, **ev)
              for n in names}
    return {
        "base": base, "packs_by_step": pack_steps, "sequential_by_step": seq_steps,
        "right_after": {n: strip_outputs(s) for n, s in right_after.items()},
        "final_with_pack": {n: strip_outputs(s) for n, s in final.items()},
        "final_routed": {n: strip_outputs(s) for n, s in routed.items()},
        "router_train": fit,
        # exact: the same generated texts, not just the same score
        "no_forgetting": {n: final[n]["outputs"] == right_after[n]["outputs"] for n in names},
        "base_unchanged": model_fingerprint(target) == fingerprint,
        "_outputs": {"right_after": {n: s["outputs"] for n, s in right_after.items()},
                     "final": {n: s["outputs"] for n, s in final.items()}},
    }


def continual_markdown(res: dict[str, Any], names: list[str]) -> str:
    """The per-step tables (packs vs sequential fine-tuning) and the first task's trajectory."""
    first = names[0]
    rows: dict[str, dict[str, float]] = {"base": {n: res["base"][n]["score"] for n in names}}
    rows.update({f"packs, {k}": v for k, v in res["packs_by_step"].items()})
    rows["packs via router, after all"] = {n: res["final_routed"][n]["score"] for n in names}
    rows.update({f"sequential FT, {k}": v for k, v in res["sequential_by_step"].items()})
    md = score_table(rows, names, "Continual learning: score per task after each step")
    traj = {"SkillPacks (own pack)": {k: v[first] for k, v in res["packs_by_step"].items()},
            "sequential full FT": {k: v[first] for k, v in res["sequential_by_step"].items()}}
    md += "\n" + score_table(traj, list(res["packs_by_step"]), f"Task {first} (A) after each step")
    md += (f"\nno forgetting (A..C with their packs after the last step generate exactly what they did right "
           f"after being learned): {res['no_forgetting']}; base weights unchanged: {res['base_unchanged']}\n")
    return md


def run(cfg) -> dict[str, Any]:
    names = [str(n) for n in cfg.continual.tasks]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError("continual.tasks", f"need at least two distinct tasks, got {names}.")
    tasks = check_config(cfg, names)
    ctx = RunContext.from_config(cfg)
    try:
        target, tokenizer = load_model(cfg.host, "host", ctx.cache_dir)
        source, source_tokenizer = load_model(cfg.donor, "donor", ctx.cache_dir)
        place_models(eval_device(cfg), target, source)
        res = continual(ctx, target, tokenizer, source, source_tokenizer, tasks, names)
        res.pop("_outputs")  # every generation: for tests, too bulky for results.json
        markdown = continual_markdown(res, names)
        print(markdown)
        ctx.log_metrics({f"{k}/{n}": v for k, row in res["sequential_by_step"].items() for n, v in row.items()},
                        prefix="continual/sequential/")
        ctx.save_results({"stage": "skillpack_continual", "tasks": names, **res,
                          "config": OmegaConf.to_container(cfg, resolve=True)}, markdown)
        return res
    finally:
        ctx.finish()

"""Stage ``finetune``: fine-tune block ``graft.layer`` of the donor on the task and save it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from grafting import surgery
from grafting.artifacts import save_tensors_with_manifest
from grafting.data.datamodule import build_datamodule
from grafting.evaluation.suite import evaluate_models
from grafting.evaluation.tables import TASK_METRICS, metric_table
from grafting.models.loading import load_model
from grafting.modules.layer_finetune import LayerFinetuneModule
from grafting.run_context import RunContext


def finetune_donor(ctx: RunContext, donor, tokenizer) -> LayerFinetuneModule:
    """Train block ``graft.layer`` of a copy of ``donor`` on the task's train split."""
    cfg, ft = ctx.cfg, ctx.cfg.finetune
    loader = OmegaConf.merge(cfg.dataloader, {"kind": "mod", "batch_size": ft.batch_size})
    data = build_datamodule(loader, cfg.task, tokenizer, int(cfg.seed), with_val=False)
    module = LayerFinetuneModule(donor, int(cfg.graft.layer), ft.method, lr=float(ft.lr), lora_r=int(ft.lora_r),
                                 lora_alpha=int(ft.lora_alpha), lora_dropout=float(ft.lora_dropout),
                                 weight_decay=float(ft.weight_decay))
    ctx.fit(module, data, "finetune", int(ft.steps), limit_val_batches=0)
    return module


def finetune_or_resume(ctx: RunContext, donor, tokenizer) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(tuned model, tuned block)``: trained now, or, with ``resume=true``, read back from a finished save."""
    folder = ctx.run_dir / "tuned_block"
    if ctx.cfg.get("resume", False) and (folder / "manifest.json").is_file():
        from grafting.stages.align import load_tuned_block

        block = load_tuned_block(str(folder), donor, int(ctx.cfg.graft.layer))
        tuned = copy.deepcopy(donor)
        surgery.get_blocks(tuned)[int(ctx.cfg.graft.layer)] = block
        return tuned.eval(), block
    module = finetune_donor(ctx, donor, tokenizer)
    save_tuned_block(ctx, module)
    return module.tuned_model(), module.tuned_block()


def save_tuned_block(ctx: RunContext, module: LayerFinetuneModule, folder: Path | None = None) -> Path:
    block = module.tuned_block()
    manifest = {"kind": "tuned_block", "layer": module.layer, "method": module.method,
                "donor": OmegaConf.to_container(ctx.cfg.donor, resolve=True),
                "finetune": OmegaConf.to_container(ctx.cfg.finetune, resolve=True)}
    return save_tensors_with_manifest(folder or ctx.run_dir / "tuned_block", block.state_dict(), manifest,
                                      overwrite=bool(ctx.cfg.get("overwrite", False)))


def run(cfg) -> dict[str, Any]:
    ctx = RunContext.from_config(cfg)
    try:
        donor, tokenizer = load_model(cfg.donor, "donor", ctx.cache_dir)
        surgery.check_block_index(donor, int(cfg.graft.layer), "graft.layer")
        tuned, _ = finetune_or_resume(ctx, donor, tokenizer)
        scores = evaluate_models(cfg, {"Tuned": tuned, "Vanilla": donor}, tokenizer, host=donor, language=False)
        table = metric_table(scores, TASK_METRICS, "Table 1: modular addition (fine-tuning only)")
        print(table)
        ctx.log_metrics(scores["Tuned"], prefix="tuned/")
        ctx.save_results({"stage": "finetune", "models": scores}, table)
        return scores
    finally:
        ctx.finish()

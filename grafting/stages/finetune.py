"""Stage ``finetune``: fine-tune block ``graft.layer`` of the donor on the task and save it."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from grafting import surgery
from grafting.artifacts import (
    atomic_dir,
    load_tensors_with_manifest,
    model_fingerprint,
    save_tensors_with_manifest,
)
from grafting.data.datamodule import build_datamodule
from grafting.errors import ArtifactError
from grafting.evaluation.suite import evaluate_models
from grafting.evaluation.tables import TASK_METRICS, metric_table
from grafting.models.loading import load_model
from grafting.modules.layer_finetune import LayerFinetuneModule
from grafting.provenance import package_versions
from grafting.run_context import RunContext

log = logging.getLogger(__name__)
# Part of every tuned-block cache key. Bump it by hand whenever a change to the fine-tuning code
# (finetune_donor, grafting/modules/layer_finetune.py, the task's datamodule, seeding) can change the
# trained block, so that blocks trained by the old code are not read back from the cache.
TUNED_BLOCK_VERSION = 1


def finetune_donor(ctx: RunContext, donor, tokenizer) -> LayerFinetuneModule:
    """Train block ``graft.layer`` of a copy of ``donor`` on the task's train split."""
    cfg, ft = ctx.cfg, ctx.cfg.finetune
    loader = OmegaConf.merge(cfg.dataloader, {"kind": "mod", "batch_size": ft.batch_size})
    data = build_datamodule(loader, cfg.task, tokenizer, int(cfg.seed), with_val=False)
    ctx.reseed()
    module = LayerFinetuneModule(donor, int(cfg.graft.layer), ft.method, lr=float(ft.lr), lora_r=int(ft.lora_r),
                                 lora_alpha=int(ft.lora_alpha), lora_dropout=float(ft.lora_dropout),
                                 weight_decay=float(ft.weight_decay))
    ctx.fit(module, data, "finetune", int(ft.steps), limit_val_batches=0)
    return module


def finetune_or_resume(ctx: RunContext, donor, tokenizer) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(tuned model, tuned block)``: read back or trained now.

    Read back from ``<run>/tuned_block`` with ``resume=true``, or from the shared cache with
    ``finetune.cache=true`` (a sweep of alignment ablations fine-tunes each donor layer once per seed).
    """
    layer = int(ctx.cfg.graft.layer)
    folder = ctx.run_dir / "tuned_block"
    cached = tuned_block_cache_path(ctx, donor) if ctx.cfg.finetune.get("cache", False) else None
    if ctx.cfg.get("resume", False) and (folder / "manifest.json").is_file():
        source = folder
    elif cached is not None and (cached / "manifest.json").is_file():
        log.info("tuned block from the cache: %s", cached)
        source = cached
    else:
        module = finetune_donor(ctx, donor, tokenizer)
        save_tuned_block(ctx, module, base=donor)
        if cached is not None and ctx.is_global_zero:  # one writer under DDP
            _copy_quietly(folder, cached)
        return module.tuned_model(), module.tuned_block()
    block = load_tuned_block(str(source), donor, layer)
    if source != folder:
        with atomic_dir(folder, overwrite=bool(ctx.cfg.get("overwrite", False))) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    tuned = copy.deepcopy(donor)
    surgery.get_blocks(tuned)[layer] = block
    return tuned.eval(), block


def tuned_block_cache_path(ctx: RunContext, donor) -> Path:
    """``<cache>/tuned_blocks/<key>``: the key hashes the donor's weights, everything that shapes training
    and the code that trains (``TUNED_BLOCK_VERSION``, torch's, transformers' and peft's versions)."""
    cfg = ctx.cfg
    versions = package_versions()
    code = {"version": TUNED_BLOCK_VERSION, **{k: versions[k] for k in ("torch", "transformers", "peft")}}
    payload = {"code": code, "donor": model_fingerprint(donor), "layer": int(cfg.graft.layer), "seed": int(cfg.seed),
               "finetune": {k: v for k, v in OmegaConf.to_container(cfg.finetune, resolve=True).items()
                            if k != "cache"},
               "task": OmegaConf.to_container(cfg.task, resolve=True), "trainer": _numerics(cfg)}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return ctx.cache_dir / "tuned_blocks" / key


def _numerics(cfg) -> dict[str, Any]:
    """The trainer settings that change the trained numbers (precision, accelerator)."""
    trainer = cfg.get("trainer") or {}
    return {k: str(trainer.get(k)) for k in ("precision", "accelerator") if k in trainer}


def _copy_quietly(source: Path, cached: Path) -> None:
    """Put a freshly tuned block in the cache; another job of the sweep may have done it first."""
    try:
        with atomic_dir(cached) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    except (ArtifactError, OSError) as err:  # a concurrent job cached it first (same key, same numbers)
        log.warning("tuned block not cached at %s: %s", cached, err)


def save_tuned_block(ctx: RunContext, module: LayerFinetuneModule, folder: Path | None = None,
                     base: torch.nn.Module | None = None) -> Path:
    """Save the tuned block; its manifest names the donor and, with ``base``, fingerprints the donor's weights."""
    block = module.tuned_block()
    manifest = {"kind": "tuned_block", "layer": module.layer, "method": module.method,
                "base_fingerprint": model_fingerprint(base) if base is not None else None,
                "donor": OmegaConf.to_container(ctx.cfg.donor, resolve=True),
                "finetune": OmegaConf.to_container(ctx.cfg.finetune, resolve=True)}
    return save_tensors_with_manifest(folder or ctx.run_dir / "tuned_block", block.state_dict(), manifest,
                                      overwrite=bool(ctx.cfg.get("overwrite", False)))


def load_tuned_block(folder: str | Path, donor, layer: int) -> torch.nn.Module:
    """The donor's block ``layer`` with the weights saved by :func:`save_tuned_block`.

    Every file's sha256 is checked first, and the manifest's layer and donor fingerprint must match.
    """
    tensors, manifest = load_tensors_with_manifest(folder)
    if manifest.get("kind") != "tuned_block" or manifest.get("layer") != layer:
        raise ArtifactError(f"{folder}: expected a tuned block of layer {layer}, manifest says "
                            f"kind={manifest.get('kind')!r} layer={manifest.get('layer')!r}.")
    expected = manifest.get("base_fingerprint")
    if expected is not None and expected != model_fingerprint(donor):
        raise ArtifactError(f"{Path(folder) / 'manifest.json'}: this tuned block was trained on another donor "
                            f"(base_fingerprint {expected[:12]}… does not match the loaded donor).")
    block = copy.deepcopy(surgery.get_blocks(donor)[layer])
    block.load_state_dict(tensors)
    return block


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

"""Fine-tune one donor block on the task (LoRA or the full block), or read a tuned block back."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from grafting import surgery
from grafting.artifacts import atomic_dir
from grafting.cache import lookup, store
from grafting.data.datamodule import DataSpec, GraftingDataModule, build_datamodule, data_spec
from grafting.data.modular import ModularAddition
from grafting.graft.tuned_block import load_tuned_block, save_tuned_block, with_block
from grafting.modules.layer_finetune import LayerFinetuneModule
from grafting.schema.graft import FinetuneConfig  # the recipe: the finetune node
from grafting.training import Fit, plain_fit

log = logging.getLogger(__name__)


def task_data(task: ModularAddition, tokenizer, batch_size: int, seed: int,
              spec: DataSpec | None = None, items: str = "finetune") -> GraftingDataModule:
    """Task problems in batches of ``batch_size`` (``spec`` gives ``seq_len`` and workers). ``items``: the task
    split: ``finetune`` for the block (its training items, or every fact of a table), ``train`` for anything
    trained on the host's side (translators, the host LoRA: the training keys of a table only)."""
    return build_datamodule(data_spec(spec or DataSpec(), kind="mod", batch_size=batch_size), task, tokenizer,
                            seed, with_val=False, task_items=items)


def finetune_block(donor: torch.nn.Module, layer: int, data: Any, config: FinetuneConfig = FinetuneConfig(), *,
                   fit: Fit = plain_fit, reseed: Callable[[], None] | None = None) -> LayerFinetuneModule:
    """Train block ``layer`` of a copy of ``donor`` on ``data``; ``donor`` itself is left untouched.

    ``reseed`` runs just before the module is built, so what ran before does not change its draws.
    """
    if reseed is not None:
        reseed()
    module = LayerFinetuneModule(donor, layer, config.method, lr=config.lr, lora_r=config.lora_r,
                                 lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 weight_decay=config.weight_decay)
    fit(module, data, "finetune", config.steps, limit_val_batches=0)
    return module


def lora_rank_for(model: torch.nn.Module, layer: int, params: int) -> int:
    """The LoRA rank on block ``layer``'s linears (the family's LoRA targets) closest to ``params`` parameters."""
    arch = surgery.architecture(model)
    block = surgery.get_blocks(model)[layer]
    # a rank-r adapter on a (d_out x d_in) weight has r (d_in + d_out) parameters (GPT-2's Conv1D included)
    per_rank = sum(sum(m.weight.shape) for name, m in block.named_modules()
                   if name.rsplit(".", 1)[-1] in arch.lora_targets and getattr(m, "weight", None) is not None)
    return max(1, round(params / per_rank))


def finetune_or_resume(donor: torch.nn.Module, layer: int, data: Callable[[], Any], config: FinetuneConfig, *,
                       folder: Path, cache: Path | None = None, resume: bool = False, overwrite: bool = False,
                       write_cache: bool = True, manifest: dict[str, Any] | None = None, fit: Fit = plain_fit,
                       reseed: Callable[[], None] | None = None,
                       cache_recipe: dict[str, Any] | None = None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(tuned model, tuned block)``, saved in ``folder``: read back or trained now.

    Read back from ``folder`` with ``resume``, or from the cache entry ``cache`` when it is whole (a sweep
    of alignment ablations fine-tunes each donor layer once per seed; a damaged entry is set aside with a
    warning and trained again); else trained on ``data()`` and saved (also into ``cache`` when
    ``write_cache``: one writer under DDP). ``manifest`` adds ``donor`` / ``finetune``; ``cache_recipe``
    is what the cache key hashes, recorded in the entry.
    """
    if resume and (folder / "manifest.json").is_file():
        source = folder
    elif cache is not None and lookup(cache) is not None:
        log.info("tuned block from the cache: %s", cache)
        source = cache
    else:
        module = finetune_block(donor, layer, data(), config, fit=fit, reseed=reseed)
        save_tuned_block(module.tuned_block(), folder, layer=module.layer, method=module.method, base=donor,
                         overwrite=overwrite, **(manifest or {}))
        if cache is not None and write_cache:
            _cache_quietly(folder, cache, cache_recipe)
        return module.tuned_model(), module.tuned_block()
    block = load_tuned_block(str(source), donor, layer)
    if source != folder:
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    return with_block(donor, layer, block), block


def _cache_quietly(source: Path, cached: Path, recipe: dict[str, Any] | None) -> None:
    """Put a freshly tuned block in the cache (a copy another job wrote first is kept)."""
    try:
        store(cached, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True), recipe=recipe)
    except OSError as err:  # a read-only or full cache costs a recompute later, not this run
        log.warning("tuned block not cached at %s: %s", cached, err)

"""What several stages read from the Hydra config, turned into the typed calls of :mod:`grafting.api`.

Not a stage itself: stages import this module, never each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from grafting import api, cache
from grafting.artifacts import model_fingerprint
from grafting.data.corpus import builtin_fingerprint, text_source
from grafting.data.datamodule import build_datamodule, data_spec
from grafting.data.modular import task_from_config
from grafting.errors import ConfigError
from grafting.evaluation.suite import eval_settings
from grafting.graft.grafted import validate_graft
from grafting.models.loading import load_model, same_tokenizer
from grafting.plain import plain, plain_dict
from grafting.provenance import package_versions
from grafting.run_context import RunContext

# Part of every tuned-block cache key. Bump it by hand whenever a change to the fine-tuning code
# (grafting/graft/finetuning.py, grafting/modules/layer_finetune.py, the task's datamodule, seeding) can change
# the trained block, so that blocks trained by the old code are not read back from the cache.
log = logging.getLogger(__name__)
TUNED_BLOCK_VERSION = 2  # 2: the fine-tune loss unembeds only the labelled positions (float-level)
# Part of every alignment cache key: bump it whenever a change to the alignment code (grafting/graft/alignment.py,
# grafting/modules/translator_align.py, grafting/graft/losses.py, the datamodules, seeding) can change the translators.
ALIGN_VERSION = 2  # 2: the logit-lens KL runs chunked (grafting.graft.losses.lens_kl; float-level)


def finetune_config(cfg) -> api.FinetuneConfig:
    """``cfg.finetune`` as a :class:`~grafting.schema.FinetuneConfig` (keys left out: the schema's defaults)."""
    return api.FinetuneConfig.of_config(plain_dict(cfg.finetune))


def align_config(cfg) -> api.AlignConfig:
    """``cfg.align`` and ``cfg.loss`` as an :class:`~grafting.schema.AlignConfig` (keys left out: the schema's
    defaults)."""
    return api.AlignConfig.of_config(plain_dict(cfg.align), plain_dict(cfg.loss))


def load_pair(ctx: RunContext) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """Donor, host and the shared tokenizer, with the graft spec validated before any training."""
    cfg = ctx.cfg
    donor, tokenizer = load_model(cfg.donor, "donor", ctx.cache_dir)
    host, host_tokenizer = load_model(cfg.host, "host", ctx.cache_dir)
    if not same_tokenizer(tokenizer, host_tokenizer):
        raise ConfigError("host", f"host {cfg.host.name!r} and donor {cfg.donor.name!r} use different tokenizers; "
                                  "alignment compares the two models on the same tokens.")
    validate_graft(host, donor, int(cfg.graft.layer), int(cfg.graft.dest), int(cfg.graft.get("span", 1)))
    return donor, host, tokenizer


def finetune_or_resume(ctx: RunContext, donor, tokenizer) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(tuned model, tuned block)`` in ``<run>/tuned_block``: read back (``resume=true``, or the shared
    cache with ``finetune.cache=true``) or fine-tuned now."""
    cfg = ctx.cfg
    config = finetune_config(cfg)

    entry, recipe = tuned_block_cache_entry(ctx, donor) if cfg.finetune.get("cache", False) else (None, None)
    return api.finetune_or_resume(
        donor, int(cfg.graft.layer), lambda: task_datamodule(cfg, tokenizer, "finetune"), config, folder=ctx.run_dir / "tuned_block",
        cache=entry, resume=bool(cfg.get("resume", False)), overwrite=bool(cfg.get("overwrite", False)),
        write_cache=ctx.is_global_zero, manifest={"donor": plain(cfg.donor), "finetune": plain(cfg.finetune)},
        fit=ctx.fit, reseed=ctx.reseed, cache_recipe=recipe)


def task_datamodule(cfg, tokenizer, items: str = "train"):
    """The task's training batches (``finetune.batch_size``): ``finetune`` for the donor's block, ``train`` (the
    default) for what trains on the host's side, which never sees a held-out key of a table of facts."""
    return api.task_data(task_from_config(cfg.task), tokenizer, int(cfg.finetune.batch_size), int(cfg.seed),
                         data_spec(cfg.dataloader), items=items)


def host_lora_control(ctx: RunContext, host, grafted, tokenizer) -> torch.nn.Module:
    """The host with LoRA on block ``graft.dest`` trained on the task (``finetune``'s recipe and steps), its rank
    chosen so that it has as many trainable parameters as the graft's two translators: what grafting
    competes with."""
    cfg = ctx.cfg
    _, graft = api.graft_of(grafted)
    budget = sum(p.numel() for t in (graft.pre_translator, graft.post_translator) for p in t.parameters())
    rank = api.lora_rank_for(host, int(cfg.graft.dest), budget)
    config = finetune_config(cfg).model_copy(update={"method": "lora", "lora_r": rank, "lora_alpha": 2 * rank})
    module = api.finetune_block(host, int(cfg.graft.dest), task_datamodule(cfg, tokenizer), config, fit=ctx.fit,
                                reseed=ctx.reseed)
    trained = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    ctx.log_metrics({"rank": rank, "params": trained, "translator_params": budget}, prefix="HostLoRA/")
    return module.tuned_model()


def tuned_block_cache_path(ctx: RunContext, donor) -> Path:
    """``<cache>/tuned_blocks/<key>``: the key hashes the donor's weights, everything that shapes training
    and the code that trains (``TUNED_BLOCK_VERSION``, torch's, transformers' and peft's versions)."""
    return tuned_block_cache_entry(ctx, donor)[0]


def tuned_block_cache_entry(ctx: RunContext, donor) -> tuple[Path, dict[str, Any]]:
    """:func:`tuned_block_cache_path` and the payload its key hashes (recorded in the entry's manifest)."""
    cfg = ctx.cfg
    versions = package_versions()
    code = {"version": TUNED_BLOCK_VERSION, **{k: versions[k] for k in ("torch", "transformers", "peft")}}
    payload = {"code": code, "donor": model_fingerprint(donor), "layer": int(cfg.graft.layer), "seed": int(cfg.seed),
               "finetune": {k: v for k, v in plain_dict(cfg.finetune).items() if k != "cache"},
               "task": plain(cfg.task), "trainer": _numerics(cfg)}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return ctx.cache_dir / "tuned_blocks" / key, payload


def _numerics(cfg) -> dict[str, Any]:
    """The trainer settings that change the trained numbers (precision, accelerator)."""
    trainer = cfg.get("trainer") or {}
    return {k: str(trainer.get(k)) for k in ("precision", "accelerator") if k in trainer}


def evaluate(cfg, models: dict[str, torch.nn.Module], tokenizer, host: torch.nn.Module, language: bool = True,
             cache_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """:func:`grafting.api.evaluate` with the run's ``task``, ``corpus`` and ``evaluation`` settings."""
    return api.evaluate(models, tokenizer, host, task_from_config(cfg.task), text_source(cfg.corpus),
                        eval_settings(cfg.evaluation), language=language, cache_dir=cache_dir)


def alignment_cache_path(ctx: RunContext, grafted, donor) -> Path:
    """``<cache>/alignments/<key>``: the key hashes the graft as built (host weights, the block in it, the
    identity translators), the donor, everything that shapes the two phases (``align``, ``loss``, the
    alignment data, the seed, the trainer's numerics) and the code (``ALIGN_VERSION``, package versions).

    The task enters only when the alignment data holds task items (``dataloader=mod|mixed``): aligning on
    text is the same for every task, so e.g. the knowledge sweep reuses the protocol's translators.
    """
    return alignment_cache_entry(ctx, grafted, donor)[0]


def alignment_cache_entry(ctx: RunContext, grafted, donor) -> tuple[Path, dict[str, Any]]:
    """:func:`alignment_cache_path` and the payload its key hashes (recorded in the entry's manifest)."""
    cfg = ctx.cfg
    versions = package_versions()
    spec = data_spec(cfg.dataloader)
    data = dataclasses.asdict(spec)
    if spec.text.source == "builtin":
        data["builtin_corpus"] = builtin_fingerprint()
    if spec.kind != "text":
        data["task"] = plain(cfg.task)
    payload = {"code": {"version": ALIGN_VERSION, **{k: versions[k] for k in ("torch", "transformers", "lightning")}},
               "grafted": model_fingerprint(grafted), "donor": model_fingerprint(donor),
               "layer": int(cfg.graft.layer), "align": align_config(cfg).model_dump(), "data": data,
               "seed": int(cfg.seed), "trainer": _numerics(cfg)}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return ctx.cache_dir / "alignments" / key, payload


def align_from_config(ctx: RunContext, grafted, host, donor, tokenizer) -> dict[str, Any]:
    """:func:`grafting.api.align` on ``cfg.dataloader`` with ``cfg.align`` / ``cfg.loss``; logs the history.

    With ``align.cache=true`` the two trained translators are read back from the shared cache when the same
    alignment ran before (:func:`alignment_cache_path`), and written there otherwise.
    """
    cfg = ctx.cfg
    cached, recipe = alignment_cache_entry(ctx, grafted, donor) if cfg.align.get("cache", False) else (None, None)
    if cached is not None and cache.lookup(cached) is not None:  # a damaged entry: set aside, aligned again
        log.info("aligned translators from the cache: %s", cached)
        history = api.load_translators_(grafted, cached)
    else:
        data = build_datamodule(cfg.dataloader, cfg.task, tokenizer, int(cfg.seed))
        history = api.align(grafted, host, donor, data, align_config(cfg), layer=int(cfg.graft.layer),
                            fit=ctx.fit, reseed=ctx.reseed, save_dir=ctx.run_dir / "align",
                            resume=bool(cfg.get("resume", False)))
        if cached is not None and ctx.is_global_zero:
            api.save_translators(grafted, cached, history, recipe=recipe)
    ctx.log_metrics({f"{p}/{k}": v for p, h in history.items() for k, v in h.items()}, prefix="align/")
    return history


def distill_from_config(ctx: RunContext, grafted, host, teacher, tokenizer, name: str = "distill") -> dict[str, Any]:
    """``align.method=distill``'s phase (:func:`grafting.graft.distillation.distill_translators`) on the task's
    training data and ``cfg.dataloader``, saved under ``<run>/align/<name>``."""
    cfg = ctx.cfg
    config = api.DistillConfig.of(plain_dict(cfg.align.distill))
    text = build_datamodule(cfg.dataloader, cfg.task, tokenizer, int(cfg.seed))
    history = api.distill_translators(grafted, host, teacher, task_datamodule(cfg, tokenizer), text, config,
                                      fit=ctx.fit, reseed=ctx.reseed, save_dir=ctx.run_dir / "align" / name,
                                      resume=bool(cfg.get("resume", False)), stage=f"align_{name}")
    ctx.log_metrics(history, prefix=f"align/{name}/")
    return history

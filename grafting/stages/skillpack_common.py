"""Config checks and pack making shared by the SkillPack stages (``skillpack``, ``skillpack_continual``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from grafting.data.skill_tasks import SkillTask, build_skill
from grafting.errors import ConfigError
from grafting.run_context import RunContext
from grafting.skillpack.merging import MERGERS
from grafting.skillpack.pack import SkillPack, load_pack, pack_nbytes, save_pack
from grafting.skillpack.policy import ModuleAwareCompressor


def plain(node: Any) -> Any:
    """OmegaConf node -> plain Python (resolved)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def eval_kwargs(cfg) -> dict[str, int]:
    return {"n_points": int(cfg.skill.n_test), "batch_size": int(cfg.skill.gen_batch_size),
            "max_new_tokens": int(cfg.skill.max_new_tokens)}


def router_prompts(tasks: Mapping[str, Any], rc) -> dict[str, list[str]]:
    """Each pack's training prompts for a router (``skillpack.fusion.router``): ``n_train`` of the training
    split in the task's template, plus as many under the training paraphrases when ``paraphrases`` is on."""
    n = int(rc.n_train)
    prompts = {name: [ex.prompt for ex in task.split("train")[:n]] for name, task in tasks.items()}
    if rc.get("paraphrases", False):
        for name, task in tasks.items():
            prompts[name] += task.router_prompts("train")[:n]
    return prompts


def choose_temperature(router, target, tokenizer, val: Mapping[str, Any], packs: Mapping[str, SkillPack],
                       rc, ev: Mapping[str, int], fingerprint: str | None = None) -> dict[str, Any] | None:
    """``gate`` with a list of temperatures (``skillpack.fusion.router.temperature``): the one whose routed
    generation scores best on the validation split (mean over the tasks ``val``) is set on ``router``.
    Returns ``{"temperature", "grid": [(T, score)]}``, or None when there is nothing to choose."""
    from grafting.evaluation.skill_eval import evaluate_routed

    temperatures = rc.get("temperature")
    if router.name != "gate" or not (isinstance(temperatures, (list, tuple)) or OmegaConf.is_list(temperatures)):
        return None
    grid = []
    for value in (float(t) for t in temperatures):
        router.settings["temperature"] = value
        scores = [evaluate_routed(target, tokenizer, task, router, packs, fingerprint=fingerprint, **ev)["score"]
                  for task in val.values()]
        grid.append((value, sum(scores) / len(scores)))
    best = max(grid, key=lambda g: g[1])[0]  # the first of equal scores: the lowest temperature listed first
    router.settings["temperature"] = best
    return {"temperature": best, "grid": grid}


def place_models(device: torch.device, *models: torch.nn.Module) -> torch.device:
    """Moves every model to ``device`` (``evaluation.device``), where the stage trains, generates and scores."""
    for model in models:
        model.to(device)
    return device


def policy_compressor(name: str, policy: Mapping[str, Any]) -> ModuleAwareCompressor:
    """The module-aware compressor of ``skillpack.methods.<name>``; bad policies raise a keyed ConfigError."""
    try:
        return ModuleAwareCompressor(plain(policy))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"skillpack.methods.{name}", str(err)) from err


def check_config(cfg: DictConfig, task_names: list[str]) -> dict[str, SkillTask]:
    """Validates tasks, policies and mergers before any model is loaded; returns the tasks by name."""
    tasks = {}
    for name in task_names:
        tasks[name] = build_skill(name, plain(cfg.skill.tasks))
    sp = cfg.skillpack
    if sp.default not in sp.methods:
        raise ConfigError("skillpack.default", f"{sp.default!r} is not in skillpack.methods "
                                               f"({', '.join(sp.methods)}).")
    for name, policy in sp.methods.items():
        policy_compressor(str(name), policy)
    for name in sp.fusion.mergers:
        if name not in MERGERS:
            raise ConfigError(f"skillpack.fusion.mergers.{name}", f"unknown merger; allowed: {', '.join(MERGERS)}.")
    for key in ("skill.n_train", "skill.n_test", "skill.source_sft.steps", "skill.target_sft.steps"):
        if int(OmegaConf.select(cfg, key)) < 1:
            raise ConfigError(key, f"must be >= 1, got {OmegaConf.select(cfg, key)}.")
    return tasks


def make_pack(ctx: RunContext, delta: Mapping[str, Tensor], task: str, method: str, fingerprint: str,
              extra: Mapping[str, Any] | None = None) -> tuple[SkillPack, int, Path]:
    """Compresses ``delta`` with ``skillpack.methods.<method>``, saves it under ``packs/<task>/<method>``
    and loads it back (so what is scored is what is on disk).

    Returns:
        ``(pack, bytes on disk, path)``.
    """
    compressor = policy_compressor(method, ctx.cfg.skillpack.methods[method])
    compressed = compressor.compress(delta)
    meta = {"task": task, "method": method, "policy": plain(ctx.cfg.skillpack.methods[method]), **dict(extra or {})}
    path = save_pack(compressed, fingerprint, ctx.run_dir / "packs" / task / method,
                     overwrite=bool(ctx.cfg.get("overwrite", False)), metadata=meta)
    return load_pack(path, expected_fingerprint=fingerprint), pack_nbytes(path), path


def save_modules_as_pack(ctx: RunContext, modules: Mapping[str, Any], task: str, method: str, fingerprint: str,
                         extra: Mapping[str, Any] | None = None) -> tuple[SkillPack, int, Path]:
    """Saves already-compressed modules (e.g. LoRA factors) as a pack and loads it back."""
    path = save_pack(dict(modules), fingerprint, ctx.run_dir / "packs" / task / method,
                     overwrite=bool(ctx.cfg.get("overwrite", False)), metadata={"task": task, "method": method,
                                                                               **dict(extra or {})})
    return load_pack(path, expected_fingerprint=fingerprint), pack_nbytes(path), path

"""Stages, chosen by ``stage.name``; a new stage is one module with ``run(cfg) -> dict`` plus one line here."""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig

from grafting.errors import ConfigError

STAGES: dict[str, str] = {
    "pretrain": "grafting.stages.pretrain",
    "pretrain_mlm": "grafting.stages.pretrain_mlm",
    "finetune": "grafting.stages.finetune",
    "align": "grafting.stages.align",
    "pipeline": "grafting.stages.pipeline",
    "skillpack": "grafting.stages.skillpack",
    "skillpack_continual": "grafting.stages.skillpack_continual",
    "transplant": "grafting.stages.transplant",
}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage named by ``cfg.stage.name`` and return its metrics."""
    name = cfg.stage.name
    if name not in STAGES:
        raise ConfigError("stage", f"unknown stage {name!r}; allowed: {', '.join(sorted(STAGES))}.")
    from grafting.models.hub import check_available

    for key in ("host", "donor"):  # first, before the heavy imports: a hub id offline fails in seconds
        if key in cfg:
            check_available(cfg[key], key)
    from grafting.validation import validate_config

    validate_config(cfg)
    return importlib.import_module(STAGES[name]).run(cfg)

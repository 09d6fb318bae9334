"""Stages, chosen by ``stage.name``; a new stage is one module with ``run(cfg) -> dict`` plus one line here."""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig

from grafting.errors import ConfigError

STAGES: dict[str, str] = {
    "pretrain": "grafting.stages.pretrain",
    "finetune": "grafting.stages.finetune",
    "align": "grafting.stages.align",
    "pipeline": "grafting.stages.pipeline",
    "skillpack": "grafting.stages.skillpack",
    "skillpack_continual": "grafting.stages.skillpack_continual",
}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage named by ``cfg.stage.name`` and return its metrics."""
    name = cfg.stage.name
    if name not in STAGES:
        raise ConfigError("stage", f"unknown stage {name!r}; allowed: {', '.join(sorted(STAGES))}.")
    from grafting.validation import validate_config

    validate_config(cfg)
    return importlib.import_module(STAGES[name]).run(cfg)

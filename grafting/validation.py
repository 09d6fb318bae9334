"""Checks of a composed config that need no model: run before any compute, errors name the key."""

from __future__ import annotations

from omegaconf import DictConfig

from grafting.data.datamodule import KINDS
from grafting.data.modular import task_from_config
from grafting.errors import ConfigError
from grafting.losses import DISTANCES
from grafting.losses import KINDS as LOSS_KINDS
from grafting.translators import TRANSLATORS

STRATEGIES = ("original", "direct")


def _check(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(key, f"unknown value {value!r}; allowed: {', '.join(map(str, allowed))}.")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first invalid value among the model-independent settings."""
    task_from_config(cfg.task)  # n >= 2, templates, split sizes
    if "graft" in cfg:
        _check("graft.strategy", cfg.graft.strategy, STRATEGIES)
        _check("graft.translator", cfg.graft.translator, sorted(TRANSLATORS))
        for key in ("layer", "dest"):
            if not isinstance(cfg.graft[key], int) or cfg.graft[key] < 0:
                raise ConfigError(f"graft.{key}", f"must be a block index >= 0, got {cfg.graft[key]!r}.")
    if "loss" in cfg:
        _check("loss.kind", cfg.loss.kind, LOSS_KINDS)
        _check("loss.distance", cfg.loss.distance, sorted(DISTANCES))
    if "dataloader" in cfg:
        _check("dataloader.kind", cfg.dataloader.kind, KINDS)
    for key in ("finetune.steps", "align.steps"):
        node, _, leaf = key.partition(".")
        if node in cfg and int(cfg[node][leaf]) < 1:
            raise ConfigError(key, f"must be >= 1, got {cfg[node][leaf]}.")

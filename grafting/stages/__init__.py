"""Stages, chosen by ``stage.name``; a new stage is one module with ``run(cfg) -> dict`` plus one line in
:mod:`grafting.stages.registry`."""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grafting.errors import ConfigError
from grafting.stages.registry import STAGES

__all__ = ["STAGES", "run"]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage named by ``cfg.stage.name`` and return its metrics."""
    name = cfg.stage.name
    if name not in STAGES:
        raise ConfigError("stage", f"unknown stage {name!r}; allowed: {', '.join(sorted(STAGES))}.")
    if cfg.get("corpus", {}).get("source", "builtin") == "builtin":
        from grafting.data.corpus import prefetch_builtin_documents

        prefetch_builtin_documents()  # parse the CPython docs on the other core while the libraries load
    from grafting.models.hub import check_available

    for key in ("host", "donor"):  # first, before the heavy imports: a hub id offline fails in seconds
        if key in cfg:
            check_available(cfg[key], key)
    from grafting.schema import validate_config

    validate_config(cfg)
    from grafting.console import quiet_libraries

    quiet_libraries()  # now, not before the checks: it imports Lightning
    import grafting.graft.hf  # noqa: F401  (a saved graft may be the host or the donor: host=<folder>)
    if name not in ("pretrain", "pretrain_mlm"):  # those train (or ship) the models themselves
        _ensure_pretrained(cfg)
    return importlib.import_module(STAGES[name]).run(cfg)


def _ensure_pretrained(cfg: DictConfig) -> None:
    """Pretrain (once, into the cache) any tiny preset the job loads, before the job seeds its RNGs.

    Loading (grafting.models) only finds shipped or cached weights; training them is not its job.
    """
    from grafting.plain import plain
    from grafting.pretraining import ensure_pretrained

    source = cfg.get("transplant", {}).get("source") if "transplant" in cfg else None
    specs = [cfg.get("host"), cfg.get("donor"), source]
    for spec in (plain(s) for s in specs if OmegaConf.is_dict(s) or isinstance(s, dict)):
        if spec.get("source") == "tiny_pretrained":
            ensure_pretrained(spec, cfg.paths.cache_dir)

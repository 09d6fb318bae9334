"""Config nodes to plain Python values: the one place that calls ``OmegaConf.to_container``."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def plain(value: Any, resolve: bool = True) -> Any:
    """``value`` as dicts, lists and scalars: a config node is converted (interpolations resolved), the rest kept."""
    return OmegaConf.to_container(value, resolve=resolve) if OmegaConf.is_config(value) else value


def plain_dict(value: Any, resolve: bool = True) -> dict[str, Any]:
    """A mapping (config node or dict) as a fresh plain ``dict``."""
    return dict(plain(value, resolve))

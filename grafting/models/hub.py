"""Is a hub model reachable? Answered in seconds, with no heavy import, before any compute."""

from __future__ import annotations

import os
import socket
from typing import Any

from grafting.errors import ConfigError
from grafting.plain import plain_dict


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """True when the hub answers within ``timeout`` seconds and offline mode is not set."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def offline_error(key: str, hub_id: str) -> ConfigError:
    """The error for a hub model that cannot be had offline; it lists the offline alternatives."""
    group = key.split(".")[0]
    twin = hub_id.rsplit("/", 1)[-1] + "-random"
    return ConfigError(
        key,
        f"cannot download {hub_id!r}: the Hugging Face hub is unreachable (or HF_HUB_OFFLINE is set) and it "
        f"is not in the local cache. Offline, use {group}=/path/to/a/saved/model, the random twin with the "
        f"real architecture ({group}={twin}, where conf/{group}/ has it), or the tiny pretrained pair "
        f"({group}=tiny-host / tiny-vanilla).",
    )


def hub_model_available(spec: Any) -> bool:
    """True when a hub spec can be loaded: it is in the local HF cache, or the hub is reachable."""
    from huggingface_hub import try_to_load_from_cache

    spec = plain_dict(spec)
    cached = try_to_load_from_cache(spec["id"], "config.json", revision=spec.get("revision", "main"))
    return isinstance(cached, str) or hub_reachable()


def check_available(spec: Any, key: str) -> None:
    """Fail fast, before any compute, when a model can be neither found locally nor downloaded.

    A hub id offline and a ``gguf_package`` model whose package is not installed both fail here in seconds.
    """
    plain = plain_dict(spec)
    if plain.get("source") == "hub" and not hub_model_available(plain):
        raise offline_error(f"{key}.id", plain["id"])
    if plain.get("source") == "gguf_package":
        from grafting.models.gguf import locate_gguf

        locate_gguf(plain, key)



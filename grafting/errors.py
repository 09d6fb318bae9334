"""Errors that name what the user has to fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is invalid. The message names the key, the value and what is allowed."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"[{key}] {message}")


class ArtifactError(RuntimeError):
    """A saved artifact (pack, tuned block, checkpoint) is missing, corrupt or for another model."""

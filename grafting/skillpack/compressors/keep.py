"""``keep``: an alias of ``none``."""

from __future__ import annotations

from grafting.skillpack.compressors.base import register
from grafting.skillpack.compressors.none import NoCompression


@register("keep")
class Keep(NoCompression):
    """Alias of ``none``."""

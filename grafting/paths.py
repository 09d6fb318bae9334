"""Where cached artifacts live when no Hydra config says otherwise."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$GRAFTING_CACHE_DIR`` or ``~/.cache/grafting``: tokenizers, the pretrained tiny pair, corpora."""
    return Path(os.environ.get("GRAFTING_CACHE_DIR", Path.home() / ".cache" / "grafting")).expanduser()

"""Models shipped inside the package (``grafting/assets/<name>``): the tiny pair, the MLM scorer, the transplant models.

Each asset folder holds a transformers model and its tokenizer, the training report, and a
``manifest.json`` with the recipe, every file's sha256, the held-out quality and the command that
regenerates it. Loading checks every sha256 first, so a damaged install fails loudly.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from pathlib import Path
from typing import Any

from grafting.artifacts import MANIFEST, atomic_dir, sha256_file, write_json_atomic
from grafting.errors import ArtifactError

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parent.parent / "assets"
# What the regeneration command writes besides the manifest; everything else in the source is left out.
_SHIPPED_SUFFIXES = (".json", ".safetensors", ".txt")


def asset_dir(name: str) -> Path:
    return ASSETS / name


def manifest(name: str) -> dict[str, Any] | None:
    """The asset's manifest, or None when the package ships no such asset."""
    path = asset_dir(name) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def matches(name: str, recipe: dict[str, Any]) -> bool:
    """True when asset ``name`` is shipped and was made by exactly ``recipe``."""
    m = manifest(name)
    return m is not None and m.get("recipe") == json.loads(json.dumps(recipe))


def verify(name: str) -> dict[str, Any]:
    """Check every file of asset ``name`` against its manifest's sha256; return the manifest."""
    folder = asset_dir(name)
    m = manifest(name)
    if m is None:
        raise ArtifactError(f"{folder / MANIFEST} is missing: the package ships no asset {name!r}.")
    for file, expected in m["files"].items():
        path = folder / file
        if not path.is_file():
            raise ArtifactError(f"{path} is missing (listed in {folder / MANIFEST}).")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{path} is corrupt: its sha256 differs from {folder / MANIFEST}.")
    return m


def verified_folder(name: str) -> Path:
    """The folder of asset ``name`` after :func:`verify`; warns when this Python's corpus differs."""
    m = verify(name)
    from grafting.data.corpus import builtin_fingerprint

    if m.get("corpus") and m["corpus"] != builtin_fingerprint():
        log.warning("%s was trained on the built-in corpus of Python %s (fingerprint %s); this Python's corpus "
                    "differs (%s), so held-out texts and language probes differ from the documented runs.",
                    name, m.get("python"), m["corpus"], builtin_fingerprint())
    return asset_dir(name)


def ship(name: str, source: str | Path, report: dict[str, Any], command: str, overwrite: bool = False,
         extra: dict[str, Any] | None = None) -> Path:
    """Copy a trained model folder into ``grafting/assets/<name>`` with a manifest (sha256 of every file).

    ``extra``: further manifest fields (e.g. the transplant models' role, cache key and measured scores).
    """
    import torch

    source = Path(source)
    with atomic_dir(asset_dir(name), overwrite=overwrite) as tmp:
        files = sorted(p for p in source.iterdir()
                       if p.is_file() and p.suffix in _SHIPPED_SUFFIXES and p.name != MANIFEST)  # the cache's
        for path in files:
            shutil.copy2(path, tmp / path.name)
        write_json_atomic(tmp / MANIFEST, {
            "kind": report.get("kind", "causal_lm"), "name": name, "recipe": report["recipe"],
            "heldout": {k: v for k, v in report.items() if k.startswith("heldout") or k.startswith("random_init")},
            "corpus": report.get("corpus"), "command": command,
            "made_with": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": report.get("threads")},
            "python": platform.python_version(),
            **(extra or {}),
            "files": {p.name: sha256_file(tmp / p.name) for p in files},
        })
    log.info("shipped %s to %s", name, asset_dir(name))
    return asset_dir(name)

"""The tiny pretrained models: the offline stand-ins for pythia-70m (vanilla) and pythia-70m-deduped (host).

Like the Pythia pair, the tiny vanilla and host share their architecture and their initialisation
(``init_seed``) and differ in their training data, as the Pile differs from the deduplicated Pile:
the vanilla model sees every training document of the built-in corpus (``data_part=all``), the
host the deduplicated corpus (``data_part=dedup``: near-duplicate documents dropped, 97% remain),
each in its own order (``data_seed``).
``a`` and ``b`` are disjoint halves. The held-out split (every 20th document) is shared.

Three places a model can come from, tried in this order:

1. **Shipped** with the package (``grafting/assets/<name>``): the default pair and MLM scorer,
   used when the spec's recipe equals the shipped manifest's recipe. Nothing is trained at run time.
2. **Cached** under ``<cache>/pretrained/<name>-<key>``, the key hashing the whole recipe.
3. **Pretrained now** and cached (the larger hosts of the size ladder, other pair seeds).

This module finds the weights (shipped or cached) and loads them; training a missing recipe is
:mod:`grafting.pretraining` (called by the stages before any model is loaded).
``python train.py stage=pretrain stage.ship=true`` regenerates the shipped files (see the README).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grafting import cache, names
from grafting.data.corpus import builtin_fingerprint
from grafting.errors import ConfigError
from grafting.models import shipped
from grafting.paths import default_cache_dir

log = logging.getLogger(__name__)
# Bump when the pretraining code changes what a recipe produces, so stale caches are not reused.
PRETRAIN_VERSION = 2
DATA_PARTS = names.DATA_PARTS


def recipe(spec: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines the pretrained weights (the spec's ``seed`` sets both seeds by default)."""
    seed = int(spec.get("seed", 0))
    shared = spec.get("shared_init")
    extra = {"shared_init": {"arch": dict(shared["arch"]), "init_seed": int(shared["init_seed"])}} if shared else {}
    return {
        "arch": dict(spec["arch"]),
        "pretrain": {k: v for k, v in dict(spec["pretrain"]).items() if k != "accelerator"},
        "init_seed": int(spec.get("init_seed", seed)),
        "data_seed": int(spec.get("data_seed", seed)),
        "data_part": str(spec.get("data_part", "all")),
        "tokenizer_vocab": int(spec.get("tokenizer_vocab", 4096)),
        "version": PRETRAIN_VERSION,
        **extra,
    }


def cache_key(spec: dict[str, Any]) -> str:
    """A hash of the recipe and the corpus it is trained on."""
    payload = {**recipe(spec), "corpus": builtin_fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(spec: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir or default_cache_dir())
    return root / "pretrained" / f"{spec.get('name', 'tiny')}-{cache_key(spec)}"


def locate(spec: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """The folder holding ``spec``'s weights: shipped or cached (every file verified).

    ``FileNotFoundError`` when neither exists, or the cached copy is damaged.
    """
    name = spec.get("shipped")
    if name and shipped.matches(name, recipe(spec)):
        return shipped.verified_folder(name)
    if name:
        log.info("%s: the recipe differs from the shipped one, so the shipped weights are not used.", name)
    path = cache_path(spec, cache_dir)
    if cache.lookup(path) is None:  # absent, or damaged (then set aside with a warning): pretrain it again
        raise FileNotFoundError(path)
    return path


def load_pretrained(spec: dict[str, Any], cache_dir: str | Path | None = None, key: str = "host"):
    """Load ``spec``'s model and tokenizer, shipped or cached; ``key`` names the config node in errors."""
    try:
        path = locate(spec, cache_dir)
    except FileNotFoundError as err:
        raise ConfigError(f"{key}.source", f"{spec.get('name', 'this tiny model')} is not pretrained yet (no whole "
                                           f"cache entry at {err}): grafting.pretraining.ensure_pretrained(spec) "
                                           "trains and caches it; train.py does it before any model is loaded.") from err
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer


def pretrain_report(spec: dict[str, Any], cache_dir: str | Path | None = None) -> dict[str, Any]:
    path = locate(spec, cache_dir) / "pretrain_report.json"
    return json.loads(path.read_text())

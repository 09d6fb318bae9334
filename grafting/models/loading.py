"""Load a host or donor model from its config node: hub id, local path, random preset or tiny pair.

A model spec (a preset of ``grafting/presets/models``, as ``host`` or ``donor``) has a ``source``:

- ``hub``: ``id`` and ``revision`` on the Hugging Face hub (the real Pythia checkpoints).
- ``local``: ``path`` to any folder holding a saved transformers causal LM and its tokenizer.
- ``random``: ``arch`` (a transformers config as a dict) with random weights and the built-in
  tokenizer. The ``*-random`` presets use the real Pythia architectures; ``tiny-random`` is tiny.
- ``tiny_pretrained``: ``arch`` pretrained on the built-in corpus with ``seed``: shipped with the
  package or cached under a key derived from the config (see :mod:`grafting.models.pretrained_tiny`;
  :func:`grafting.pretraining.ensure_pretrained` trains a missing one).
- ``gguf_package``: a real pretrained model shipped as a GGUF file in a pip package (``package``,
  ``gguf_file``, ``install``), de-quantised once and cached (:mod:`grafting.models.gguf`; ``smollm2-135m``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from grafting import names
from grafting.errors import ConfigError
from grafting.models.gguf import load_gguf_package
from grafting.models.hub import hub_reachable, offline_error
from grafting.models.pretrained_tiny import load_pretrained
from grafting.models.tokenizer import builtin_tokenizer
from grafting.plain import plain_dict

SOURCES = names.MODEL_SOURCES
_DTYPES = {name: getattr(torch, name) for name in names.MODEL_DTYPES}


def _dtype(spec: dict, key: str) -> torch.dtype:
    name = spec.get("dtype", "float32")
    if name not in _DTYPES:
        raise ConfigError(f"{key}.dtype", f"unknown dtype {name!r}; allowed: {sorted(_DTYPES)}.")
    return _DTYPES[name]


def _from_hub(spec: dict, key: str) -> tuple[PreTrainedModel, Any]:
    hub_id, revision = spec["id"], spec.get("revision", "main")
    kwargs = dict(revision=revision, trust_remote_code=bool(spec.get("trust_remote_code", False)))
    try:  # the local HF cache first: instant, and works offline
        tokenizer = AutoTokenizer.from_pretrained(hub_id, local_files_only=True, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            hub_id, local_files_only=True, dtype=_dtype(spec, key), **kwargs
        )
        return model, tokenizer
    except OSError:
        pass
    # Without a reachable hub, from_pretrained retries for minutes: fail fast instead.
    if not hub_reachable():
        raise offline_error(key, hub_id)
    tokenizer = AutoTokenizer.from_pretrained(hub_id, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(hub_id, dtype=_dtype(spec, key), **kwargs)
    return model, tokenizer


def _from_local(spec: dict, key: str) -> tuple[PreTrainedModel, Any]:
    path = spec.get("path")
    if not path or not Path(path).is_dir():
        raise ConfigError(f"{key}.path", f"{path!r} is not a folder holding a saved model.")
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{key}.path", f"{path!r} has no config.json: not a saved transformers model.")
    trust = bool(spec.get("trust_remote_code", False))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(spec, key), trust_remote_code=trust)
    return model, tokenizer


def build_random(arch: dict, seed: int, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A causal LM with architecture ``arch`` (``model_type`` + config fields) and seeded random weights."""
    arch = dict(arch)
    model_type = arch.pop("model_type", None)
    if model_type is None:
        raise ConfigError("arch.model_type", "a random model's arch needs a model_type, e.g. gpt_neox.")
    config = AutoConfig.for_model(model_type, **arch)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def load_model(spec: Any, key: str = "host", cache_dir: str | Path | None = None) -> tuple[PreTrainedModel, Any]:
    """Load ``(model, tokenizer)`` for a host/donor spec; ``key`` names the config node in errors.

    The model is returned in eval mode; training code calls ``.train()`` on what it trains.
    """
    spec = plain_dict(spec)
    source = spec.get("source")
    if source == "hub":
        model, tokenizer = _from_hub(spec, f"{key}.id")
    elif source == "local":
        model, tokenizer = _from_local(spec, key)
    elif source == "random":
        tokenizer = builtin_tokenizer(int(spec.get("tokenizer_vocab", 4096)), cache_dir)
        model = build_random(spec["arch"], int(spec.get("seed", 0)), _dtype(spec, key))
    elif source == "tiny_pretrained":  # shipped or cached: grafting.pretraining.ensure_pretrained trains it first
        model, tokenizer = load_pretrained(spec, cache_dir, key)
    elif source == "gguf_package":  # converted on first use into the cache (about 20 s), then read back
        model, tokenizer = load_gguf_package(spec, cache_dir, key, _dtype(spec, key))
    else:
        raise ConfigError(f"{key}.source", f"unknown source {source!r}; allowed: {', '.join(SOURCES)}.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def same_tokenizer(a: Any, b: Any) -> bool:
    """True when two tokenizers map every string to the same ids (same vocab and special tokens)."""
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id

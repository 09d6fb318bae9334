"""Pretrain a tiny causal LM of the pair on its part of the built-in corpus, and cache it.

The recipe, the cache key and where the weights are found live in :mod:`grafting.models.pretrained_tiny`;
this module trains what is missing (a model's training is not part of loading it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from grafting import surgery
from grafting.cache import save_trained_model
from grafting.data.corpus import builtin_documents, builtin_fingerprint
from grafting.data.datamodule import GraftingDataModule, split_texts
from grafting.data.datasets import TextChunkDataset, pad_collate
from grafting.errors import ConfigError
from grafting.models.loading import build_random
from grafting.models.pretrained_tiny import DATA_PARTS, cache_key, cache_path, locate, recipe
from grafting.models.tokenizer import builtin_tokenizer
from grafting.modules.causal_lm import CausalLMModule, heldout_perplexity

log = logging.getLogger(__name__)


def training_documents(part: str) -> list[str]:
    """The training documents of ``part``: all; dedup = without near-duplicates; a / b = even / odd-indexed.

    A near-duplicate repeats an earlier document's first 60 characters (lower-cased, whitespace
    collapsed): the standard library repeats many docstrings (e.g. of overridden methods).
    (A 3/4 subset was tried first: it overfits to held-out ppl 64 where the full corpus gives 56.)
    """
    if part not in DATA_PARTS:
        raise ConfigError("data_part", f"unknown data part {part!r}; allowed: {', '.join(DATA_PARTS)}.")
    docs = split_texts(list(builtin_documents()), "train")
    if part == "dedup":
        seen: set[str] = set()
        kept = []
        for doc in docs:
            key = " ".join(doc.lower().split())[:60]
            if key not in seen:
                seen.add(key)
                kept.append(doc)
        return kept
    return docs if part == "all" else docs[{"a": 0, "b": 1}[part]::2]


def heldout_loader(tokenizer, seq_len: int, batch_size: int) -> DataLoader:
    """The shared held-out split (every 20th document) in chunks of ``seq_len`` tokens, in order."""
    val = TextChunkDataset(split_texts(list(builtin_documents()), "validation"), tokenizer, seq_len)
    return DataLoader(val, batch_size=batch_size, collate_fn=pad_collate(tokenizer.pad_token_id))


# The config keys of each family's dropout, set to the recipe's ``dropout`` while pretraining (Llama has none
# on the residual stream).
DROPOUT_KEYS = {"gpt_neox": ("hidden_dropout", "attention_dropout"), "llama": ("attention_dropout",),
                "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop")}


def pretrain(spec: dict[str, Any], cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Pretrain ``spec`` on its part of the built-in corpus, save it to its cache folder; return its report."""
    r = recipe(spec)
    cfg = r["pretrain"]
    tokenizer = builtin_tokenizer(r["tokenizer_vocab"], cache_dir)
    # Dropout regularises pretraining only (the corpus is small: ~10 epochs); the saved model has none.
    dropout = float(cfg.get("dropout", 0.0))
    keys = DROPOUT_KEYS.get(r["arch"]["model_type"], DROPOUT_KEYS["gpt_neox"])
    model = build_random({**r["arch"], **dict.fromkeys(keys, dropout)} if dropout else r["arch"], r["init_seed"])
    if "shared_init" in r:  # a wider model that contains a narrower one's initialisation (surgery.embed_narrow_)
        surgery.embed_narrow_(model, build_random(r["shared_init"]["arch"], r["shared_init"]["init_seed"]))
    seq_len, batch_size, val_batches = int(cfg["seq_len"]), int(cfg["batch_size"]), int(cfg.get("val_batches", 20))
    train = TextChunkDataset(training_documents(r["data_part"]), tokenizer, seq_len)
    data = GraftingDataModule(train, None, tokenizer.pad_token_id, batch_size, seed=r["data_seed"])
    held_out = heldout_loader(tokenizer, seq_len, batch_size)
    random_ppl = heldout_perplexity(model, held_out, max_batches=val_batches)

    L.seed_everything(r["data_seed"], workers=True)  # dropout (none in the tiny arch) and nothing else
    module = CausalLMModule(model.train(), lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.01)),
                            warmup_steps=int(cfg["warmup_steps"]), max_steps=int(cfg["steps"]))
    trainer = L.Trainer(max_steps=int(cfg["steps"]), accelerator=spec["pretrain"].get("accelerator", "auto"),
                        devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=spec.get("progress_bar", False), enable_model_summary=False,
                        limit_val_batches=0, gradient_clip_val=1.0)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    seconds = time.perf_counter() - start
    model = module.model.eval().cpu()
    if dropout:
        for key in keys:
            setattr(model.config, key, 0.0)
    ppl = heldout_perplexity(model, held_out, max_batches=val_batches)
    report = {"name": spec.get("name"), "recipe": r, "train_seconds": round(seconds, 1),
              "heldout_ppl": round(ppl, 2), "random_init_heldout_ppl": round(random_ppl, 2),
              "train_chunks": len(train), "train_tokens_seen": int(cfg["steps"]) * batch_size * seq_len,
              "corpus": builtin_fingerprint(), "threads": torch.get_num_threads(), "cache_key": cache_key(spec)}
    log.info("pretrained %s: held-out ppl %.1f (random init %.1f) in %.0fs", spec.get("name"), ppl, random_ppl,
             seconds)
    save_trained_model(cache_path(spec, cache_dir), model, tokenizer, "pretrain_report.json", report)
    return report


def ensure_pretrained(spec: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """The folder of ``spec``'s weights (shipped or cached), pretrained now and cached if missing.

    Pretraining runs under ``fork_rng``: a cold cache must not move the caller's torch RNG.
    """
    try:
        return locate(spec, cache_dir)
    except FileNotFoundError:
        log.info("no cached %s: pretraining it now (once).", spec.get("name"))
    with torch.random.fork_rng():
        pretrain(spec, cache_dir)
    return locate(spec, cache_dir)

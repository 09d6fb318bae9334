"""The tiny pretrained pair: the offline stand-in for pythia-70m (vanilla) vs pythia-70m-deduped (host).

Both are the same small GPTNeoX pretrained on the built-in corpus; they differ only in ``seed``,
which sets both the initial weights and the data order. Each is cached under a key derived from
its config, so a second run reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grafting.artifacts import atomic_dir, write_json_atomic
from grafting.data.corpus import builtin_documents, builtin_fingerprint
from grafting.data.datamodule import GraftingDataModule, split_texts
from grafting.data.datasets import TextChunkDataset
from grafting.models.loading import build_random
from grafting.models.tokenizer import builtin_tokenizer
from grafting.modules.causal_lm import CausalLMModule, heldout_perplexity
from grafting.paths import default_cache_dir

log = logging.getLogger(__name__)
_VERSION = 1  # bump when the pretraining recipe changes, so stale caches are not reused


def cache_key(spec: dict[str, Any]) -> str:
    """A hash of everything that determines the pretrained weights."""
    payload = {
        "arch": spec["arch"],
        "pretrain": spec["pretrain"],
        "seed": int(spec["seed"]),
        "tokenizer_vocab": int(spec.get("tokenizer_vocab", 4096)),
        "corpus": builtin_fingerprint(),
        "version": _VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(spec: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir or default_cache_dir())
    return root / "pretrained" / f"{spec.get('name', 'tiny')}-{cache_key(spec)}"


def pretrain(spec: dict[str, Any], cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Pretrain ``spec`` on the built-in corpus and save it to its cache folder; return its report."""
    cfg = spec["pretrain"]
    seed = int(spec["seed"])
    tokenizer = builtin_tokenizer(int(spec.get("tokenizer_vocab", 4096)), cache_dir)
    model = build_random(spec["arch"], seed)
    docs = list(builtin_documents())
    seq_len = int(cfg["seq_len"])
    train = TextChunkDataset(split_texts(docs, "train"), tokenizer, seq_len)
    val = TextChunkDataset(split_texts(docs, "validation"), tokenizer, seq_len)
    data = GraftingDataModule(train, val, tokenizer.pad_token_id, int(cfg["batch_size"]), seed=seed)
    random_ppl = heldout_perplexity(model, data.val_dataloader(), max_batches=int(cfg.get("val_batches", 20)))

    L.seed_everything(seed, workers=True)
    module = CausalLMModule(model.train(), lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.01)),
                            warmup_steps=int(cfg["warmup_steps"]), max_steps=int(cfg["steps"]))
    trainer = L.Trainer(max_steps=int(cfg["steps"]), accelerator=cfg.get("accelerator", "auto"), devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    seconds = time.perf_counter() - start
    model = module.model.eval().cpu()
    ppl = heldout_perplexity(model, data.val_dataloader(), max_batches=int(cfg.get("val_batches", 20)))
    report = {"name": spec.get("name"), "seed": seed, "steps": int(cfg["steps"]), "train_seconds": round(seconds, 1),
              "heldout_ppl": round(ppl, 2), "random_init_heldout_ppl": round(random_ppl, 2),
              "train_chunks": len(train), "cache_key": cache_key(spec)}
    log.info("pretrained %s: held-out ppl %.1f (random init %.1f) in %.0fs", spec.get("name"), ppl, random_ppl,
             seconds)
    final = cache_path(spec, cache_dir)
    try:
        with atomic_dir(final) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json_atomic(tmp / "pretrain_report.json", report)
    except Exception:
        if not (final / "pretrain_report.json").is_file():  # a parallel job may have written it first
            raise
    return report


def load_or_pretrain(spec: dict[str, Any], cache_dir: str | Path | None = None):
    """Load the cached pretrained model for ``spec``, pretraining it first if it is not cached."""
    path = cache_path(spec, cache_dir)
    if not (path / "pretrain_report.json").is_file():
        log.info("no cached %s at %s: pretraining it now (once).", spec.get("name"), path)
        pretrain(spec, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer


def pretrain_report(spec: dict[str, Any], cache_dir: str | Path | None = None) -> dict[str, Any]:
    path = cache_path(spec, cache_dir) / "pretrain_report.json"
    return json.loads(path.read_text())

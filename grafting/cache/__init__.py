"""The cache under ``$GRAFTING_CACHE_DIR`` (or ``~/.cache/grafting``): entries that never lie.

Every kind (``pretrained``, ``transplant_models``, ``tuned_blocks``, ``alignments``, ``scores``,
``tokenizers``, ``gguf``) is written with :func:`store` and read with :func:`lookup`: a manifest holds each file's
sha256 and the recipe that made the entry, every read verifies it, and a damaged entry is a miss (one
warning, moved aside, recomputed). ``python -m grafting.cache ls|verify|prune|adopt`` inspects the cache.
"""

from grafting.cache.entries import check_entry, lookup, read_manifest, require, store
from grafting.cache.models import save_trained_model

KINDS = {
    "pretrained": "tiny models pretrained on first use (grafting.pretraining)",
    "transplant_models": "the transplant stage's models, phase by phase (grafting.pretraining.transplant_pair)",
    "tuned_blocks": "fine-tuned donor blocks (finetune.cache=true)",
    "alignments": "aligned translators (align.cache=true)",
    "scores": "evaluation scores of a model's weights (evaluation.cache=true)",
    "tokenizers": "the built-in BPE tokenizers (grafting.models.tokenizer)",
    "gguf": "real models de-quantised from a package's GGUF file, keyed on its sha256 (grafting.models.gguf)",
}

__all__ = ["KINDS", "check_entry", "lookup", "read_manifest", "require", "save_trained_model", "store"]

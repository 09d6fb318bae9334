"""A byte-level BPE tokenizer trained locally on the built-in corpus (no hub needed)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from grafting.artifacts import atomic_dir
from grafting.data.corpus import builtin_documents, builtin_fingerprint
from grafting.paths import default_cache_dir

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_builtin_tokenizer(vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the built-in corpus; deterministic for a given corpus."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(builtin_documents(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD)


def builtin_tokenizer(vocab_size: int = 4096, cache_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The cached built-in tokenizer, trained on first use (a few seconds)."""
    cache = Path(cache_dir or default_cache_dir()) / "tokenizers" / f"bpe{vocab_size}-{builtin_fingerprint()}"
    if not (cache / "tokenizer.json").is_file():
        tokenizer = train_builtin_tokenizer(vocab_size)
        try:
            with atomic_dir(cache) as tmp:
                tokenizer.save_pretrained(tmp)
        except Exception:  # another process won the race: use its copy
            if not (cache / "tokenizer.json").is_file():
                raise
    return AutoTokenizer.from_pretrained(cache)

"""A byte-level BPE tokenizer trained locally on the built-in corpus (no hub needed)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from grafting import cache
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
    """The cached built-in tokenizer (every file verified), trained on first use or on damage (a few seconds)."""
    fingerprint = builtin_fingerprint()
    entry = Path(cache_dir or default_cache_dir()) / "tokenizers" / f"bpe{vocab_size}-{fingerprint}"
    if cache.lookup(entry) is None:
        tokenizer = train_builtin_tokenizer(vocab_size)
        cache.store(entry, tokenizer.save_pretrained, recipe={"vocab_size": vocab_size, "corpus": fingerprint})
    return AutoTokenizer.from_pretrained(entry)

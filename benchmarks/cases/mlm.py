"""(d) Batched MLM predictability (all masked variants of all texts in batches) against one forward per word.

The masked LM is a randomly initialised BERT of bert-base's shape with a WordPiece tokenizer trained
locally on the built-in corpus, so nothing is downloaded. Both paths give the same score (checked).
"""

from __future__ import annotations

import torch
from tokenizers.implementations import BertWordPieceTokenizer
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from benchmarks.common import Settings, causal_tokenizer, median_time, prompts, ratio
from benchmarks.result import Measurement
from grafting.data.corpus import builtin_documents
from grafting.metrics.language import mlm_predictability, mlm_predictability_naive


def masked_lm(quick: bool, device: torch.device) -> tuple[torch.nn.Module, BertTokenizerFast, str]:
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(builtin_documents(), vocab_size=2000 if quick else 30522, min_frequency=2)
    tokenizer = BertTokenizerFast(vocab=wordpiece.get_vocab())
    shape = (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if quick
             else {})  # BertConfig's defaults are bert-base: 12 layers, hidden 768
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), **shape)).to(device).eval()
    return model, tokenizer, "tiny BERT" if quick else "bert-base-sized BERT"


def run(s: Settings) -> list[Measurement]:
    model, tokenizer, name = masked_lm(s.quick, s.device)
    n, tokens = (4, 16) if s.quick else (12, 48)
    texts = prompts(n, tokens, causal_tokenizer())  # texts as long as the generated continuations scored
    # top_k = the whole vocabulary: a random BERT ranks few words in its top 10, and every word then
    # counts, so the two scores compared below are means over all words, not NaN.
    kwargs = {"multi_piece": "first_piece", "batch_size": 64, "top_k": len(tokenizer)}
    scores = {}

    def batched() -> None:
        scores["batched"] = mlm_predictability(texts, model, tokenizer, **kwargs)

    def naive() -> None:
        scores["naive"] = mlm_predictability_naive(texts, model, tokenizer, **kwargs)

    fast = median_time(batched, s.device, s.repeats)
    simple = median_time(naive, s.device, 1, warmup=0)  # the slow path: one timed run (the first is warm)
    batched_score, naive_score = scores["batched"], scores["naive"]
    return [Measurement("d", f"MLM predictability of {n} texts of ~{tokens} tokens, {name}",
                        "batched masked variants (batch 64)", fast, "one forward per masked word", simple,
                        ratio=ratio(simple, fast), floor=5.0,
                        extra={"score_batched": batched_score, "score_naive": naive_score})]

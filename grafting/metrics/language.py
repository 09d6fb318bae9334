"""Language-preservation metrics: the paper's P and MLM scores, plus token perplexity and next-token KL.

The paper's two metrics (seed 000, §Experiments) are computed on generated continuations:

- ``word_entropy_perplexity``: P = 2^H over the word frequencies of one text.
- ``mlm_predictability``: how well a masked LM (BERT-base-uncased in the paper) recovers each word.

The paper admits both are weak, so we add ``token_perplexity`` under a reference causal LM and
``next_token_kl`` between two models on held-out text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from grafting.generation import eval_mode, padding_side
from grafting.metrics.divergence import kl_per_position, shifted_nll

# Part of every score-cache key (grafting/evaluation/suite.py). Bump it by hand whenever a change here
# or in grafting/evaluation/language_eval.py (probe texts, generation settings) can change a language
# score, so that cached scores computed by the old code are not read back.
SCORE_VERSION = 3

_WORD = re.compile(r"\w+")
_HAS_WORD_CHAR = re.compile(r"\w")

MultiPiece = Literal["skip", "first_piece"]


def word_entropy_perplexity(text: str) -> float:
    """Word-level entropy "perplexity" P = 2^H of one text (the paper's P).

    Words are the matches of the regex ``\\w+`` in the lower-cased text (so punctuation is
    dropped and "The"/"the" are one word). With N words and p(w) = count(w)/N,
    H = -sum over distinct words of p(w) log2 p(w). A text with no words has H = 0, so P = 1.0,
    the same value as a text repeating one word.
    """
    words = _WORD.findall(text.lower())
    n = len(words)
    if n == 0:
        return 1.0
    entropy = -sum((c / n) * math.log2(c / n) for c in Counter(words).values())
    return 2.0**entropy


@dataclass(frozen=True)
class _Variant:
    """One masked copy of a text: which text, its token ids with the word masked, what to predict where."""

    text_idx: int
    input_ids: list[int]
    position: int
    target: int


def _within_positions(max_length: int, mlm_model) -> int:
    """Cap `max_length` at the scorer's position table, when the model declares one."""
    positions = getattr(getattr(mlm_model, "config", None), "max_position_embeddings", None)
    return min(max_length, positions) if positions else max_length


def _masked_variants(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int,
    multi_piece: MultiPiece,
    skip_punctuation: bool,
) -> list[_Variant]:
    """Build every masked variant of every text (the definition of which words are scored)."""
    if tokenizer.mask_token_id is None:
        raise ValueError("mlm_tokenizer has no mask token")
    variants: list[_Variant] = []
    for t_idx, text in enumerate(texts):
        enc = tokenizer(text, truncation=True, max_length=max_length)
        ids: list[int] = enc["input_ids"]
        pieces: dict[int, list[int]] = {}
        for pos, word in enumerate(enc.word_ids()):
            if word is not None:  # None marks [CLS]/[SEP]
                pieces.setdefault(word, []).append(pos)
        for positions in pieces.values():
            if len(positions) > 1 and multi_piece == "skip":
                continue
            first = positions[0]
            if skip_punctuation and not _HAS_WORD_CHAR.search(tokenizer.convert_ids_to_tokens(ids[first])):
                continue
            masked = list(ids)
            for pos in positions:  # one [MASK] per word piece
                masked[pos] = tokenizer.mask_token_id
            variants.append(_Variant(t_idx, masked, first, ids[first]))
    return variants


def _per_text(sums: list[float], counts: list[int]) -> list[float]:
    return [s / c for s, c in zip(sums, counts, strict=True) if c > 0]


def _aggregate(sums: list[float], counts: list[int]) -> float:
    per_text = _per_text(sums, counts)
    return sum(per_text) / len(per_text) if per_text else float("nan")


def _score_rows(logits: torch.Tensor, targets: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability of each target and whether it is among the top-k predictions, row-wise."""
    logits = logits.float()
    prob = logits.softmax(-1).gather(-1, targets[:, None])[:, 0]
    top = logits.topk(min(top_k, logits.shape[-1]), dim=-1).indices
    return prob, (top == targets[:, None]).any(-1)


def _masked_position_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Logits at one position per row, without the full [batch, seq, vocab] tensor where possible."""
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    # BERT (`cls`) and RoBERTa (`lm_head`) heads act on any leading shape, so apply them to the masked
    # rows only; other models fall back to the full logits.
    head = getattr(model, "cls", None)
    if head is None:
        head = getattr(model, "lm_head", None)
    if head is not None and getattr(model, "base_model", model) is not model:
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        return head(hidden[rows, positions])
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[rows, positions]


def mlm_predictability(
    texts: list[str],
    mlm_model: nn.Module,
    mlm_tokenizer: PreTrainedTokenizerBase,
    top_k: int = 10,
    batch_size: int = 64,
    multi_piece: MultiPiece = "skip",
    skip_punctuation: bool = True,
    max_length: int = 512,
    per_text: list[float] | None = None,
) -> float:
    """The paper's MLM predictability score, with all masked variants batched together.

    ``per_text``: a list that receives each scored text's own score (for the interval's item variance).

    For each word w_i of a text, mask it and read p(w_i | rest) from the masked LM. delta_i = 1
    if the original token is among the `top_k` predictions (the paper does not give k). A text's
    score is the mean of p over its retrieved words (M = number retrieved); the corpus score is
    the mean of the text scores over texts with M >= 1 (texts with none are left out, not zero).

    Words are the tokenizer's words (``word_ids``: BERT splits on whitespace and punctuation).
    Choices the paper leaves open:

    - ``multi_piece="skip"`` (default): only words that are one word piece are scored, so
      p(w_i) is an exact single-token probability. ``"first_piece"``: a word of several pieces
      gets one [MASK] per piece, and its first piece's probability and rank are used.
    - ``skip_punctuation=True``: pure-punctuation "words" (".", ",") are not scored, matching the
      ``\\w+`` words of `word_entropy_perplexity`; they would otherwise inflate the score.

    Args:
        texts: Texts to score (truncated to `max_length` tokens).
        mlm_model: A masked LM, e.g. ``AutoModelForMaskedLM`` of bert-base-uncased.
        mlm_tokenizer: Its (fast) tokenizer.
        top_k: Retrieval cut-off.
        batch_size: Masked variants (across all texts) per forward pass.
        multi_piece: How to treat words of several word pieces, see above.
        skip_punctuation: Leave out words without a word character.
        max_length: Token limit per text, special tokens included (and at most the model's positions).

    Returns:
        The mean score, or NaN if no word of any text was retrieved.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_length = _within_positions(max_length, mlm_model)
    variants = _masked_variants(mlm_tokenizer, texts, max_length, multi_piece, skip_punctuation)
    # Sorting by length keeps padding, hence wasted compute, small within a batch.
    variants.sort(key=lambda v: len(v.input_ids))
    pad_id = mlm_tokenizer.pad_token_id if mlm_tokenizer.pad_token_id is not None else 0
    device = next(mlm_model.parameters()).device
    sums, counts = [0.0] * len(texts), [0] * len(texts)
    with eval_mode(mlm_model), torch.inference_mode():
        for start in range(0, len(variants), batch_size):
            batch = variants[start : start + batch_size]
            width = max(len(v.input_ids) for v in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, v in enumerate(batch):  # right padding: BERT positions are absolute from 0
                ids[row, : len(v.input_ids)] = torch.tensor(v.input_ids)
                mask[row, : len(v.input_ids)] = 1
            positions = torch.tensor([v.position for v in batch], device=device)
            targets = torch.tensor([v.target for v in batch], device=device)
            logits = _masked_position_logits(mlm_model, ids.to(device), mask.to(device), positions)
            prob, hit = _score_rows(logits, targets, top_k)
            for v, p, h in zip(batch, prob.tolist(), hit.tolist(), strict=True):
                if h:
                    sums[v.text_idx] += p
                    counts[v.text_idx] += 1
    if per_text is not None:
        per_text.extend(_per_text(sums, counts))
    return _aggregate(sums, counts)


def mlm_predictability_naive(
    texts: list[str],
    mlm_model: nn.Module,
    mlm_tokenizer: PreTrainedTokenizerBase,
    top_k: int = 10,
    batch_size: int = 64,
    multi_piece: MultiPiece = "skip",
    skip_punctuation: bool = True,
    max_length: int = 512,
) -> float:
    """Reference for `mlm_predictability`: one unpadded full forward per masked word.

    `batch_size` is accepted for signature compatibility and ignored.
    """
    del batch_size
    max_length = _within_positions(max_length, mlm_model)
    device = next(mlm_model.parameters()).device
    sums, counts = [0.0] * len(texts), [0] * len(texts)
    with eval_mode(mlm_model), torch.inference_mode():
        for v in _masked_variants(mlm_tokenizer, texts, max_length, multi_piece, skip_punctuation):
            logits = mlm_model(input_ids=torch.tensor([v.input_ids], device=device)).logits[0, v.position]
            prob, hit = _score_rows(logits[None], torch.tensor([v.target], device=device), top_k)
            if hit.item():
                sums[v.text_idx] += prob.item()
                counts[v.text_idx] += 1
    return _aggregate(sums, counts)


def token_perplexity(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int = 16,
    max_length: int = 256,
    per_text: list[float] | None = None,
) -> float:
    """Token-level perplexity exp(mean NLL) of `texts` under a causal LM.

    The mean is over all predicted tokens of all texts (token-weighted, pads excluded). The first
    token of each text has no context and is not predicted; texts are truncated to `max_length`.
    ``per_text``: a list that receives each text's mean NLL (for the interval's item variance).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    # Right padding: a plain forward numbers positions from 0, so left pads would shift them.
    with eval_mode(model), padding_side(tokenizer, "right"), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            ).to(device)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            logits = model(input_ids=ids, attention_mask=mask).logits
            labels = ids.masked_fill(mask == 0, -100)
            nll, tokens = shifted_nll(logits, labels)
            total_nll += nll
            total_tokens += tokens
            if per_text is not None:
                for row in range(ids.shape[0]):
                    row_nll, row_tokens = shifted_nll(logits[row : row + 1], labels[row : row + 1])
                    if row_tokens:
                        per_text.append(row_nll / row_tokens)
    if total_tokens == 0:
        return float("nan")
    return math.exp(total_nll / total_tokens)


def next_token_kl(
    model_p: nn.Module,
    model_q: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    per_text: list[float] | None = None,
) -> float:
    """Mean KL(p || q) between two models' next-token distributions over non-pad positions.

    ``per_text`` receives each row's own mean KL (for the interval's item variance).

    Typical use: p = host, q = grafted model, on held-out text. Pass unpadded or right-padded
    batches: a plain forward does not derive positions from the mask, so left pads shift them.
    Computed in float32 from log_softmax, so it is exactly 0 for identical logits.

    Args:
        model_p: Reference causal LM.
        model_q: Compared causal LM (same vocabulary).
        input_ids: [batch, seq] token ids.
        attention_mask: [batch, seq], 1 for real tokens.

    Returns:
        The KL in nats, averaged over positions with mask 1 (NaN if there are none).
    """
    with eval_mode(model_p), eval_mode(model_q), torch.inference_mode():
        dev_p = next(model_p.parameters()).device
        dev_q = next(model_q.parameters()).device
        logits_p = model_p(input_ids=input_ids.to(dev_p), attention_mask=attention_mask.to(dev_p)).logits
        logits_q = model_q(input_ids=input_ids.to(dev_q), attention_mask=attention_mask.to(dev_q)).logits
        kl = kl_per_position(logits_p, logits_q)
        keep = attention_mask.to(dev_p).bool()
        if not keep.any():
            return float("nan")
        if per_text is not None:
            rows = (kl * keep).sum(-1) / keep.sum(-1).clamp_min(1)
            per_text.extend(rows[keep.any(-1)].tolist())
        return kl[keep].mean().item()

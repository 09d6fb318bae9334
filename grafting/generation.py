"""Text continuation with Hugging Face causal LMs, batched and one prompt at a time.

`generate_continuations` is the fast path used by evaluation. `generate_one_by_one` is the
unpadded reference it is tested against (and benchmarked against).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from grafting.progress import progress


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode and restore its previous training flag on exit."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def padding_side(tokenizer: PreTrainedTokenizerBase, side: str) -> Iterator[PreTrainedTokenizerBase]:
    """Temporarily set the tokenizer's padding side (and a pad token, if it has none).

    A tokenizer without a pad token (Pythia's, GPT-2's) pads with EOS; the original
    pad token is restored on exit so callers see no side effect.
    """
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = old_side
        if old_pad is None:
            tokenizer.pad_token = None


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _as_id_set(value: int | Iterable[int] | None) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    if isinstance(value, torch.Tensor):
        return {int(v) for v in value.flatten().tolist()}
    return {int(v) for v in value}


def _eos_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase, gen_kwargs: dict[str, Any]) -> set[int]:
    """Every id that ends a continuation: the tokenizer's, the model's and any passed to generate."""
    ids = _as_id_set(tokenizer.eos_token_id) | _as_id_set(gen_kwargs.get("eos_token_id"))
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None:
        ids |= _as_id_set(gen_cfg.eos_token_id)
    return ids


def cut_at_eos(token_ids: list[int], eos_ids: set[int]) -> list[int]:
    """Return the tokens before the first EOS (all of them if there is none)."""
    for i, tok in enumerate(token_ids):
        if tok in eos_ids:
            return token_ids[:i]
    return token_ids


def _decode_new(tokenizer: PreTrainedTokenizerBase, new_ids: torch.Tensor, eos_ids: set[int]) -> list[str]:
    # Cut before decoding: after EOS, generate() fills with pad tokens, which may not be special.
    return [tokenizer.decode(cut_at_eos(row.tolist(), eos_ids), skip_special_tokens=True) for row in new_ids]


def _generate_kwargs(
    tokenizer: PreTrainedTokenizerBase, max_new_tokens: int, do_sample: bool, gen_kwargs: dict[str, Any]
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Passing pad_token_id explicitly avoids generate()'s "setting pad to eos" warning on every call.
    kwargs["pad_token_id"] = pad_id
    kwargs.update(gen_kwargs)
    return kwargs


def generate_continuations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 32,
    do_sample: bool = False,
    **gen_kwargs: Any,
) -> list[str]:
    """Generate a continuation for each prompt, in left-padded batches.

    Args:
        model: A causal LM with `generate` (any device; inputs follow the model).
        tokenizer: Its tokenizer. Padding side and pad token are set temporarily and restored.
        prompts: Prompt strings.
        max_new_tokens: Generation budget per prompt.
        batch_size: Prompts per `generate` call.
        do_sample: Sample instead of greedy decoding.
        **gen_kwargs: Passed to `model.generate` (e.g. `eos_token_id`, `temperature`).

    Returns:
        Only the newly generated text per prompt, cut at the first EOS, special tokens skipped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _device_of(model)
    eos_ids = _eos_ids(model, tokenizer, gen_kwargs)
    outputs: list[str] = []
    # Left padding so every prompt's last real token sits at the same position, where generation appends.
    with eval_mode(model), padding_side(tokenizer, "left"), torch.inference_mode():
        kwargs = _generate_kwargs(tokenizer, max_new_tokens, do_sample, gen_kwargs)
        for start in progress(range(0, len(prompts), batch_size), desc="generate"):
            enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(device)
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
            outputs.extend(_decode_new(tokenizer, out[:, enc["input_ids"].shape[1] :], eos_ids))
    return outputs


def generate_one_by_one(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 32,
    do_sample: bool = False,
    **gen_kwargs: Any,
) -> list[str]:
    """Reference path: same contract as `generate_continuations`, one unpadded prompt per call.

    `batch_size` is accepted for signature compatibility and ignored.
    """
    del batch_size
    device = _device_of(model)
    eos_ids = _eos_ids(model, tokenizer, gen_kwargs)
    outputs: list[str] = []
    with eval_mode(model), torch.inference_mode():
        kwargs = _generate_kwargs(tokenizer, max_new_tokens, do_sample, gen_kwargs)
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt").to(device)
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
            outputs.extend(_decode_new(tokenizer, out[:, enc["input_ids"].shape[1] :], eos_ids))
    return outputs

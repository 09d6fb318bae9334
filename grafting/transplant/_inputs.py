"""Turning prompts / tensors / dicts into left-padded model inputs (shared by analysis and metrics)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

Batch = Mapping[str, torch.Tensor]
BatchLike = Batch | torch.Tensor | str | Sequence[str]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameterless module)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` builds them, so padded rows see 0..n-1."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def forward_kwargs(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """Kwargs for ``model(**kw)``: moved to the model's device, with mask-aware ``position_ids`` added.

    Without explicit positions a left-padded row would be shifted by its pad count and give different
    numbers than the same prompt alone; ``generate`` already does this, plain forwards do not.
    """
    dev = model_device(model)
    kw = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    mask = kw.get("attention_mask")
    if mask is not None and "position_ids" not in kw and accepts(model, "position_ids"):
        kw["position_ids"] = position_ids_from_mask(mask)
    return kw


def accepts(model: nn.Module, arg: str) -> bool:
    """Whether ``model.forward`` takes a keyword argument named ``arg``."""
    try:
        return arg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def iter_batches(
    inputs: Iterable[BatchLike] | BatchLike, tokenizer: Any = None, batch_size: int = 8
) -> Iterator[Batch]:
    """Yield dict batches from dicts, ``input_ids`` tensors, or strings (tokenised with left padding).

    Args:
        inputs: a dict batch, a 1-D/2-D tensor of ids, a string, a list of strings, or an iterable of these.
        tokenizer: required for strings; padding side is forced to ``left`` for the call, and a missing
            pad token is set to the EOS token (a lasting change to the tokenizer).
        batch_size: strings given flat are grouped into batches of this size.
    """
    if isinstance(inputs, (Mapping, torch.Tensor, str)):
        inputs = [inputs]
    pending: list[str] = []
    for item in inputs:
        if isinstance(item, str):
            pending.append(item)
            if len(pending) == batch_size:
                yield _tokenize(pending, tokenizer)
                pending = []
            continue
        if pending:
            yield _tokenize(pending, tokenizer)
            pending = []
        if isinstance(item, Mapping):
            yield item
        elif isinstance(item, torch.Tensor):
            yield {"input_ids": item if item.dim() == 2 else item.unsqueeze(0)}
        elif isinstance(item, Sequence) and all(isinstance(s, str) for s in item):
            yield _tokenize(list(item), tokenizer)
        else:
            raise TypeError(f"unsupported input of type {type(item).__name__}; expected dict, tensor or str")
    if pending:
        yield _tokenize(pending, tokenizer)


def _tokenize(texts: list[str], tokenizer: Any) -> Batch:
    if tokenizer is None:
        raise ValueError("string prompts need a tokenizer (pass tokenizer=...)")
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"  # last position must be each row's last real token
    try:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        enc = tokenizer(texts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = old
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put models in eval mode (no dropout) and restore their previous training flags afterwards."""
    flags = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for m, f in zip(models, flags, strict=True):
            m.train(f)

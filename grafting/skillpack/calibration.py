"""Calibration statistics for data-aware compression: each linear layer's input Hessian ``Σ x xᵀ / N``.

GPTQ (:mod:`grafting.skillpack.gptq`) needs, for every weight it quantises, the second moment of that
layer's inputs on calibration prompts. Only ``nn.Linear`` layers are hooked (weights ``out × in``,
GPTNeoX and Llama); GPT-2's ``Conv1D`` stores ``in × out`` and is left to round-to-nearest.
Padding positions are excluded with the batch's ``attention_mask``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import torch
from torch import Tensor, nn


@torch.no_grad()
def collect_hessians(model: nn.Module, batches: Iterable[Mapping[str, Tensor]],
                     names: Collection[str] | None = None) -> dict[str, Tensor]:
    """Parameter name (``<module>.weight``) -> (in × in) float32 mean of ``x xᵀ`` over real tokens, on the CPU.

    Args:
        model: the model whose layer inputs are measured (its device is used).
        batches: tokenised inputs (``input_ids``, optional ``attention_mask``).
        names: weight names to measure (default: every ``nn.Linear``).
    """
    device = next(model.parameters()).device
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    mask: dict[str, Tensor | None] = {"current": None}
    hooks = []

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["input"]
            x = x.detach().double().reshape(-1, x.shape[-1])
            m = mask["current"]
            if m is not None and m.numel() == x.shape[0]:
                x = x[m.reshape(-1).bool()]
            sums[name] = sums.get(name, 0) + x.t() @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    for path, module in model.named_modules():
        weight_name = f"{path}.weight"
        if isinstance(module, nn.Linear) and (names is None or weight_name in names):
            hooks.append(module.register_forward_pre_hook(hook_for(weight_name), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            mask["current"] = batch.get("attention_mask")
            model(**batch, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {name: (total / max(counts[name], 1)).float().cpu() for name, total in sums.items()}


def prompt_batches(tokenizer, texts: list[str], batch_size: int = 32) -> list[dict[str, Tensor]]:
    """Right-padded tokenised batches of ``texts`` for :func:`collect_hessians`."""
    out = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
            out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    finally:
        tokenizer.padding_side = side
    return out

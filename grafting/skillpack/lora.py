"""LoRA as a SkillPack: the equal-size baseline (docs/METHODS.md §2).

A trained peft LoRA is stored as one ``lora`` entry per adapted weight, holding the factors
``A = scaling · B_lora`` (out × r) and ``B = A_lora`` (r × in) with ``A @ B`` = peft's own delta
(transposed for GPT-2's Conv1D, ``fan_in_fan_out``). So LoRA packs are saved, loaded, applied and
measured on disk exactly like compressed deltas.

Equal size: a LoRA of rank r on the target modules costs ``r · Σ (in + out)`` values; the rank is
the one whose factor bytes come nearest to a byte budget (the default pack's size on disk).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from grafting.skillpack.compressors.base import CompressedTensor
from grafting.skillpack.quant import resolve_dtype

_PEFT_PREFIX = "base_model.model."


def _meta(shape: tuple[int, ...], rank: int, dtype: str, alpha: float) -> dict[str, Any]:
    return {"method": "lora", "params": {"rank": rank, "randomized": False, "niter": 2, "oversample": 8,
                                         "dtype": dtype, "lora_alpha": alpha},
            "shape": list(shape), "dtype": "float32", "rank": rank, "source": "peft"}


def lora_pack(peft_model: nn.Module, dtype: str = "float16", adapter: str = "default") -> dict[str, CompressedTensor]:
    """Name of the adapted base weight -> ``lora`` :class:`CompressedTensor`, from a peft model.

    Args:
        peft_model: a ``PeftModel`` (or its ``base_model``) with LoRA layers.
        dtype: storage dtype of the factors ("float16" halves the bytes; "float32" is exact).
        adapter: the adapter name.
    """
    store = resolve_dtype(dtype)
    out: dict[str, CompressedTensor] = {}
    for path, module in peft_model.named_modules():
        if not (hasattr(module, "lora_A") and adapter in getattr(module, "lora_A", {})):
            continue
        a = module.lora_A[adapter].weight.detach().float().cpu()  # r x in
        b = module.lora_B[adapter].weight.detach().float().cpu()  # out x r
        scaling = float(module.scaling[adapter])
        left, right = b * scaling, a  # (out x r) @ (r x in) = the Linear weight's delta
        if getattr(module, "fan_in_fan_out", False):  # Conv1D stores the weight as in x out
            left, right = a.t() * scaling, b.t()
        name = path.removeprefix(_PEFT_PREFIX) + ".weight"
        shape = (left.shape[0], right.shape[1])
        meta = _meta(shape, int(a.shape[0]), dtype, float(module.lora_alpha[adapter]))
        out[name] = CompressedTensor({"A": left.to(store).contiguous(), "B": right.to(store).contiguous()}, meta)
    if not out:
        raise ValueError("no LoRA layers found in the model")
    return out


def lora_values_per_rank(model: nn.Module, targets: list[str] | tuple[str, ...]) -> int:
    """``Σ (in + out)`` over the weights a LoRA on leaf names ``targets`` adapts (values per unit of rank)."""
    total = 0
    for path, module in model.named_modules():
        if path.rsplit(".", 1)[-1] not in targets:
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, Tensor) and weight.dim() == 2:
            total += weight.shape[0] + weight.shape[1]
    if total == 0:
        raise ValueError(f"no 2-D weights named {list(targets)} in the model")
    return total


def rank_for_bytes(budget_bytes: int, model: nn.Module, targets: list[str] | tuple[str, ...],
                   dtype: str = "float16") -> int:
    """The LoRA rank whose factor bytes are nearest ``budget_bytes`` (at least 1)."""
    per_rank = lora_values_per_rank(model, targets) * torch.tensor([], dtype=resolve_dtype(dtype)).element_size()
    return max(1, round(budget_bytes / per_rank))

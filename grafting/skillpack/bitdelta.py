"""BitDelta's scale distillation: fit each matrix's scale to the fine-tuned model's outputs.

BitDelta (Liu et al., 2024) stores ``sign(Δ)`` and one scale ``α`` per matrix, initialised at
``mean|Δ|``, then trains only the scales so that the compressed model's logits match the
fine-tuned model's on calibration text (mean squared error). The signs stay fixed.

Here each scale is trained as ``α = α₀ · m`` with the multiplier ``m`` starting at 1: Adam's step
is about ``lr`` in the parameter's own units, and ``α₀`` differs by orders of magnitude between
models, so one learning rate for ``m`` fits every model (the optimum is the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from grafting.skillpack.compressors import BitDelta, CompressedTensor, decompress


def _logits(output: Any) -> Tensor:
    return output.logits if hasattr(output, "logits") else output


def distill_scales(
    model: nn.Module,
    teacher: nn.Module,
    modules: Mapping[str, CompressedTensor],
    batches: Sequence[Mapping[str, Tensor]],
    *,
    steps: int = 200,
    lr: float = 1e-2,
    output: Callable[[Any], Tensor] = _logits,
) -> tuple[dict[str, CompressedTensor], dict[str, float]]:
    """Returns the pack with every ``bitdelta`` scale fitted, and the loss before and after.

    Args:
        model: the base target (left unchanged).
        teacher: the fine-tuned model whose outputs are matched (same inputs).
        modules: a pack's modules; ``bitdelta`` entries get trained scales, the others are applied
            as they are (e.g. norms stored dense).
        batches: calibration inputs, keyword arguments of ``model`` (cycled for ``steps`` steps).
        steps, lr: Adam on the scale multipliers.
        output: maps a model's output to the tensor compared (default: ``.logits``).
    """
    if not batches:
        raise ValueError("scale distillation needs at least one calibration batch")
    device = next(model.parameters()).device
    params = dict(model.named_parameters())
    fixed: dict[str, Tensor] = {}
    signs: dict[str, Tensor] = {}
    scale0: dict[str, Tensor] = {}
    for name, c in modules.items():
        if name not in params:
            raise KeyError(f"pack has a delta for {name!r}, which the model does not have")
        if c.meta.get("method") == "bitdelta":
            unit = BitDelta.decompress(replace(c, tensors={**c.tensors, "scale": torch.ones(1)}))
            signs[name] = unit.to(device)
            scale0[name] = c.tensors["scale"].float().to(device)
        else:
            fixed[name] = decompress(c).to(device)
    mult = {name: torch.ones(1, device=device, requires_grad=True) for name in signs}
    opt = torch.optim.Adam(mult.values(), lr=lr)

    def weights() -> dict[str, Tensor]:
        w = {n: (params[n].detach().float() + d).to(params[n].dtype) for n, d in fixed.items()}
        for n, sign in signs.items():
            w[n] = (params[n].detach().float() + scale0[n] * mult[n] * sign).to(params[n].dtype)
        return w

    with torch.no_grad():
        targets = [output(teacher(**{k: v.to(device) for k, v in b.items()})).float() for b in batches]

    def loss_on(i: int) -> Tensor:
        batch = {k: v.to(device) for k, v in batches[i].items()}
        return torch.nn.functional.mse_loss(output(functional_call(model, weights(), (), batch)).float(), targets[i])

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            before = sum(float(loss_on(i)) for i in range(len(batches))) / len(batches)
        for step in range(steps):
            opt.zero_grad()
            loss = loss_on(step % len(batches))
            loss.backward()
            opt.step()
        with torch.no_grad():
            after = sum(float(loss_on(i)) for i in range(len(batches))) / len(batches)
    finally:
        model.train(was_training)
    out = dict(modules)
    for name in signs:
        scale = (scale0[name] * mult[name].detach()).cpu()
        out[name] = CompressedTensor({**modules[name].tensors, "scale": scale},
                                     {**modules[name].meta, "distilled": True})
    return out, {"loss_before": before, "loss_after": after}


def calibration_inputs(batches: Iterable[Mapping[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Keeps ``input_ids`` and ``attention_mask`` of tokenised batches (what a causal LM's forward needs)."""
    return [{k: v for k, v in b.items() if k in ("input_ids", "attention_mask")} for b in batches]

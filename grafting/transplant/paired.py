"""The paper's activation score: L1 difference of post-linear activations of source and target, same tokens.

Both models read the same left-padded batch; at each row's last ``positions`` tokens (the prompt's last token
and, when the input is prompt + answer, every decoding step of the answer, teacher-forced) each module's
output vectors are compared: ``mean_features |a_source - a_target|``, averaged over rows and positions.
Unlike ``abs_diff`` (difference of mean magnitudes), two modules whose outputs have the same size but point
elsewhere score high. Only one batch's last-``positions`` outputs of the target are held at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from grafting.transplant._inputs import BatchLike, accepts, eval_mode, forward_kwargs, iter_batches
from grafting.transplant.candidates import linear_modules

__all__ = ["paired_l1"]


def _last(out: Any, positions: int) -> torch.Tensor:
    out = out[0] if isinstance(out, tuple) else out
    return out[:, -positions:, :].detach().float()


@torch.no_grad()
def paired_l1(
    source: nn.Module,
    target: nn.Module,
    inputs: Iterable[BatchLike] | BatchLike,
    *,
    names: Sequence[str] | None = None,
    tokenizer: Any = None,
    batch_size: int = 8,
    positions: int = 1,
) -> dict[str, float]:
    """Mean L1 difference per feature of each module's output in ``source`` vs ``target`` on the same tokens.

    Args:
        source, target: models with the modules ``names`` (same qualified names and output widths).
        inputs: left-padded dict batches, ``input_ids`` tensors, or strings (need ``tokenizer``).
        names: modules to compare; defaults to every leaf linear of ``target``.
        tokenizer: used for string inputs (left padding is enforced).
        batch_size: batch size for flat string inputs.
        positions: how many trailing positions of each row to compare; every one must be a real token.

    Returns:
        ``{name: score}`` in ``names`` order.

    Raises:
        ValueError: ``positions < 1``, or a row shorter than ``positions`` real tokens.
    """
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
    names = list(names) if names is not None else list(linear_modules(target))
    sums = dict.fromkeys(names, 0.0)
    count = 0
    held: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            held[name] = _last(out, positions)
        return hook

    def compare(name: str):
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            diff = (_last(out, positions) - held[name].to(out.device)).abs().mean(dim=-1)  # (batch, positions)
            sums[name] += float(diff.double().sum())
        return hook

    with eval_mode(source, target):
        for batch in iter_batches(inputs, tokenizer, batch_size):
            mask = batch.get("attention_mask")
            if mask is not None and not bool(mask[:, -positions:].all()):
                raise ValueError(f"a row has fewer than positions={positions} real tokens")
            for model, make in ((target, keep), (source, compare)):
                mods = dict(model.named_modules())
                handles = [mods[n].register_forward_hook(make(n)) for n in names]
                try:
                    kw = forward_kwargs(model, batch)
                    if accepts(model, "use_cache"):
                        kw.setdefault("use_cache", False)
                    model(**kw)
                finally:
                    for h in handles:
                        h.remove()
            count += batch["input_ids"].shape[0] * positions
            held.clear()
    return {n: sums[n] / count for n in names}

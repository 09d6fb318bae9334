"""Export a model with SkillPacks merged in, as a folder ``AutoModelForCausalLM.from_pretrained`` loads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from grafting.skillpack.apply import PackLike, applied


def export_merged(
    model: nn.Module,
    packs: PackLike | Sequence[PackLike],
    folder: str | Path,
    weights: Sequence[float] | None = None,
    tokenizer: Any = None,
    **apply_kwargs: Any,
) -> Path:
    """Save ``model`` with ``Σ weights[i] * packs[i]`` added (:func:`apply_packs_`) with ``save_pretrained``.

    The packs are applied in place for the save and undone bit-exactly afterwards (no second copy
    of the model in memory), so ``model`` is left as it was. A grafted model saves in the grafted
    format (:mod:`grafting.graft.hf.modeling`). ``apply_kwargs`` go to ``apply_packs_`` (e.g. ``strict``).
    """
    folder = Path(folder)
    with applied(model, packs, weights, **apply_kwargs):
        model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder

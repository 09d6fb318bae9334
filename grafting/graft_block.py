"""The graft itself: Pre-T -> donor block -> Post-T, called exactly like the host block it replaces.

Below both :mod:`grafting.grafted` (building, saving) and :mod:`grafting.hf_grafted` (the Hugging Face
model class), so neither imports the other's module for it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grafting import surgery


class GraftedBlock(nn.Module):
    """Pre-T, a donor block and Post-T, called exactly like the host block it replaces."""

    def __init__(
        self,
        block: nn.Module,
        pre: nn.Module,
        post: nn.Module,
        rotary: nn.Module | None = None,
        donor_config: Any = None,
        layer: int | None = None,
    ):
        super().__init__()
        self.pre_translator = pre
        self.block = block
        self.post_translator = post
        # The donor's own rotary embedding: its head size or base may differ from the host's.
        self.rotary = rotary
        # Where the block came from (donor config, donor block index): what a saved model needs to rebuild it.
        self.donor_config = donor_config
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        h = self.pre_translator(hidden_states)
        if self.rotary is not None and kwargs.get("position_embeddings") is not None:
            kwargs["position_embeddings"] = self.rotary(h, position_ids=kwargs.get("position_ids"))
        out = self.block(h, *args, **kwargs)
        if isinstance(out, tuple):  # some architectures still return (hidden, ...) tuples
            return (self.post_translator(out[0]), *out[1:])
        return self.post_translator(out)


def graft_of(grafted: nn.Module) -> tuple[int, GraftedBlock]:
    """The position and the :class:`GraftedBlock` of a grafted model."""
    for i, block in enumerate(surgery.get_blocks(grafted)):
        if isinstance(block, GraftedBlock):
            return i, block
    raise ValueError("this model holds no GraftedBlock")

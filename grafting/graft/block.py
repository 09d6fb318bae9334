"""The graft itself: Pre-T -> donor block -> Post-T, called exactly like the host block it replaces.

Below both :mod:`grafting.graft.grafted` (building, saving) and :mod:`grafting.graft.hf.modeling` (the Hugging Face
model class), so neither imports the other's module for it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grafting import surgery


class SkippedBlock(nn.Module):
    """Holds a host position that a span graft covers: the residual passes through unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class GraftedBlock(nn.Module):
    """Pre-T, a donor block (then ``following`` donor blocks, for a span) and Post-T, called exactly like
    the host block it replaces."""

    def __init__(
        self,
        block: nn.Module,
        pre: nn.Module,
        post: nn.Module,
        rotary: nn.Module | None = None,
        donor_config: Any = None,
        layer: int | None = None,
        following: list[nn.Module] | None = None,
        host_family: str | None = None,
    ):
        super().__init__()
        self.pre_translator = pre
        self.block = block
        self.post_translator = post
        # A span graft (graft.span = m): donor blocks i+1..i+m-1 run after the (tuned) block i, inside the
        # translators; the host positions j+1..j+m-1 they cover hold SkippedBlocks.
        self.following = nn.ModuleList(following or [])
        # The donor's own rotary embedding: its head size or base may differ from the host's.
        self.rotary = rotary
        # Where the block came from (donor config, donor block index): what a saved model needs to rebuild it.
        self.donor_config = donor_config
        self.layer = layer
        # The families of the host that calls this block and of the donor it came from: when they differ, the
        # host's call is translated into the donor family's (grafting.surgery.block_call / call_block).
        donor_family = surgery.ARCHITECTURES[donor_config.model_type].family if donor_config is not None else None
        self.cross_family = host_family is not None and donor_family is not None and host_family != donor_family
        self.host_family, self.donor_family = host_family, donor_family

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        h = self.pre_translator(hidden_states)
        if self.cross_family:
            call = surgery.block_call(self.host_family, args, kwargs)
            out = h
            for block in (self.block, *self.following):
                out = surgery.call_block(self.donor_family, block, out[0] if isinstance(out, tuple) else out, call,
                                         self.rotary)
        else:
            if self.rotary is not None and kwargs.get("position_embeddings") is not None:
                kwargs["position_embeddings"] = self.rotary(h, position_ids=kwargs.get("position_ids"))
            out = self.block(h, *args, **kwargs)
            for block in self.following:
                out = block(out[0] if isinstance(out, tuple) else out, *args, **kwargs)
        if isinstance(out, tuple):  # some architectures still return (hidden, ...) tuples
            return (self.post_translator(out[0]), *out[1:])
        return self.post_translator(out)


def span_of(graft: GraftedBlock) -> int:
    """How many donor blocks the graft holds (``graft.span``)."""
    return 1 + len(graft.following)


def graft_of(grafted: nn.Module) -> tuple[int, GraftedBlock]:
    """The position and the :class:`GraftedBlock` of a grafted model."""
    for i, block in enumerate(surgery.get_blocks(grafted)):
        if isinstance(block, GraftedBlock):
            return i, block
    raise ValueError("this model holds no GraftedBlock")

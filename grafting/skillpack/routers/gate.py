"""``gate``: mixes packs per prompt with the learned router's softmax instead of picking one."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from grafting.skillpack.routers.base import register
from grafting.skillpack.routers.learned import Learned


@register("gate")
class Gate(Learned):
    """Settings: those of ``learned``, plus ``temperature`` (softmax(logits / T); a list is a grid the stage
    chooses from on validation, :func:`grafting.stages.skillpack_common.choose_temperature`, and the first is
    used until then) and ``top_k`` (the packs kept per prompt; their weights are renormalised to 1, as MoLE
    masks and renormalises its gate)."""

    def weights(self, model: nn.Module, tokenizer, prompts: Sequence[str]) -> Tensor:
        temperature = self.settings.get("temperature", 1.0)
        temperature = float(temperature[0] if isinstance(temperature, (list, tuple)) else temperature)
        top_k = min(int(self.settings.get("top_k", 2)), len(self.names))
        probs = torch.softmax(self.logits(model, tokenizer, prompts).float() / temperature, dim=-1)
        keep = torch.zeros_like(probs).scatter_(-1, probs.topk(top_k, dim=-1).indices, 1.0)
        kept = probs * keep
        return kept / kept.sum(-1, keepdim=True)

"""``centroid``: the pack whose training prompts' mean feature is nearest (cosine), top-1; no gradient step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from grafting.skillpack.pack import SkillPack
from grafting.skillpack.router import prompt_features
from grafting.skillpack.routers.base import Router, one_hot, register


@register("centroid")
class Centroid(Router):
    """Features as the learned router's (mean-pooled last hidden state), centred on the mean of all
    training prompts, so that what every prompt shares (the frame, the model's bias) does not dominate."""

    centroids: Tensor | None = None
    center: Tensor | None = None

    def _fit(self, model: nn.Module, tokenizer, packs: Mapping[str, SkillPack],
             prompts_by_pack: Mapping[str, Sequence[str]], seed: int) -> dict[str, float]:
        feats = {n: prompt_features(model, tokenizer, prompts_by_pack[n]) for n in self.names}
        self.center = torch.cat(list(feats.values())).mean(0)
        self.centroids = torch.stack([nn.functional.normalize(f.mean(0) - self.center, dim=0) for f in feats.values()])
        chosen = [self._nearest(f) for f in feats.values()]
        hits = sum(sum(int(c == i) for c in ch) for i, ch in enumerate(chosen))
        return {"accuracy": hits / max(1, sum(len(c) for c in chosen))}

    def _nearest(self, features: Tensor) -> list[int]:
        if self.centroids is None:
            raise RuntimeError(f"router {self.name!r} is not fitted")
        return (nn.functional.normalize(features - self.center, dim=-1) @ self.centroids.T).argmax(-1).tolist()

    def weights(self, model: nn.Module, tokenizer, prompts: Sequence[str]) -> Tensor:
        return one_hot(self._nearest(prompt_features(model, tokenizer, prompts)), len(self.names))

"""``learned``: a classifier on the base model's mean-pooled prompt features (grafting.skillpack.router), top-1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn

from grafting.skillpack.pack import SkillPack
from grafting.skillpack.router import PackRouter, prompt_features, train_router
from grafting.skillpack.routers.base import Router, one_hot, register


@register("learned")
class Learned(Router):
    """Settings: ``hidden`` (0: logistic regression), ``epochs``, ``lr`` (full-batch AdamW)."""

    classifier: PackRouter | None = None

    def _fit(self, model: nn.Module, tokenizer, packs: Mapping[str, SkillPack],
             prompts_by_pack: Mapping[str, Sequence[str]], seed: int) -> dict[str, float]:
        self.classifier, stats = train_router(
            model, tokenizer, {n: prompts_by_pack[n] for n in self.names}, hidden=int(self.settings.get("hidden", 0)),
            epochs=int(self.settings.get("epochs", 300)), lr=float(self.settings.get("lr", 0.05)), seed=seed,
            fingerprint=self.fingerprint)
        return stats

    def logits(self, model: nn.Module, tokenizer, prompts: Sequence[str]) -> Tensor:
        if self.classifier is None:
            raise RuntimeError(f"router {self.name!r} is not fitted")
        return self.classifier(prompt_features(model, tokenizer, prompts)).detach()

    def weights(self, model: nn.Module, tokenizer, prompts: Sequence[str]) -> Tensor:
        return one_hot(self.logits(model, tokenizer, prompts).argmax(-1).tolist(), len(self.names))

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """The classifier as ``router.safetensors`` + ``router.json`` (:meth:`PackRouter.save`)."""
        if self.classifier is None:
            raise RuntimeError(f"router {self.name!r} is not fitted")
        return self.classifier.save(path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, **settings) -> Learned:
        """A saved classifier (sha256-checked) as this router; ``settings`` as at fitting (e.g. a gate's
        ``temperature`` and ``top_k``, which the classifier file does not hold)."""
        classifier = PackRouter.load(path)
        router = cls(classifier.names, **settings)
        router.classifier, router.fingerprint = classifier, classifier.base_fingerprint
        return router

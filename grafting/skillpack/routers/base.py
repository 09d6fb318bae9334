"""What every SkillPack router is: per prompt, a weight for each pack (a row summing to 1), and generation
that applies each prompt's weighted packs, generates, and unloads (the base weights bit-identical afterwards).

A top-1 router gives one-hot rows; a gate gives a mixture. A new router is one file in this folder: a
:class:`Router` subclass with ``@register("<name>")``; ``skillpack.router=<name>`` then selects it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from grafting import names
from grafting.generation import generate_continuations
from grafting.skillpack.apply import applied
from grafting.skillpack.pack import SkillPack, check_fingerprint

ROUTERS: dict[str, type[Router]] = {}


#: Class decorator: the router ``name`` (what ``skillpack.router`` accepts).
register = names.registrar(ROUTERS, "router")


class Router:
    """Picks or mixes packs per prompt.

    ``fit`` sees the base target, the packs and the training prompts of each pack (a zero-training router
    uses only the packs); ``weights`` maps prompts to an ``(N, n_packs)`` tensor whose rows sum to 1.
    """

    name: ClassVar[str] = ""
    trains_on_prompts: ClassVar[bool] = True  # False: the packs alone define it (no prompt is seen)

    def __init__(self, names: Sequence[str], **settings: Any) -> None:
        if len(names) < 1 or len(set(names)) != len(names):
            raise ValueError(f"a router needs distinct pack names, got {list(names)}")
        self.names = list(names)
        self.settings = settings
        self.fingerprint: str | None = None

    def fit(self, model: nn.Module, tokenizer, packs: Mapping[str, SkillPack],
            prompts_by_pack: Mapping[str, Sequence[str]] | None = None, seed: int = 0,
            fingerprint: str | None = None) -> dict[str, float]:
        """Fits the router on the base ``model`` (whose :func:`model_fingerprint` is ``fingerprint``, checked
        again at generation); returns its training statistics."""
        self.fingerprint = fingerprint
        return self._fit(model, tokenizer, packs, prompts_by_pack or {}, seed)

    def _fit(self, model: nn.Module, tokenizer, packs: Mapping[str, SkillPack],
             prompts_by_pack: Mapping[str, Sequence[str]], seed: int) -> dict[str, float]:
        raise NotImplementedError

    def weights(self, model: nn.Module, tokenizer, prompts: Sequence[str]) -> Tensor:
        raise NotImplementedError

    def choose(self, model: nn.Module, tokenizer, prompts: Sequence[str]) -> list[str]:
        """The pack with the largest weight, per prompt (what "routed to its own pack" counts)."""
        return [self.names[i] for i in self.weights(model, tokenizer, prompts).argmax(-1).tolist()]


def one_hot(index: Sequence[int], n: int) -> Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(list(index), dtype=torch.long), n).float()


def routed_generate(model: nn.Module, tokenizer, router: Router, packs: Mapping[str, SkillPack],
                    prompts: Sequence[str], max_new_tokens: int, batch_size: int = 64,
                    fingerprint: str | None = None, decimals: int = 2) -> tuple[list[str], list[str]]:
    """Per prompt: apply the packs with the router's weights, generate greedily, unload.

    The weights are rounded to ``decimals``, and prompts whose rounded weights agree are generated together
    (one apply / unload per group: a
    top-1 router makes one group per pack). Returns ``(outputs, chosen pack names)`` aligned with ``prompts``;
    the chosen pack is the one with the largest weight.
    """
    missing = [n for n in router.names if n not in packs]
    if missing:
        raise KeyError(f"router knows packs {missing} that were not given")
    if fingerprint is not None and router.fingerprint is not None:
        check_fingerprint(router.fingerprint, fingerprint, where=f"router {router.name!r}")
    weights = router.weights(model, tokenizer, prompts)
    rounded = [tuple(round(float(w), decimals) for w in row) for row in weights]
    outputs: list[str] = [""] * len(prompts)
    for row in dict.fromkeys(rounded):
        idx = [i for i, r in enumerate(rounded) if r == row]
        used = [(router.names[j], w) for j, w in enumerate(row) if w > 0]
        total = sum(w for _, w in used)
        with applied(model, [packs[n] for n, _ in used], [w / total for _, w in used], fingerprint=fingerprint):
            texts = generate_continuations(model, tokenizer, [prompts[i] for i in idx], max_new_tokens, batch_size)
        for i, text in zip(idx, texts, strict=True):
            outputs[i] = text
    return outputs, [router.names[i] for i in weights.argmax(-1).tolist()]

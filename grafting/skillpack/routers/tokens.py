"""``tokens``: each token of a prompt votes for the pack whose training prompts hold the nearest token; top-1.

The prompt-level routers pool a prompt into one vector, where the wording of a template can outweigh its
content. Here every token keeps its own vote. A token's similarity ``s`` to a pack is its largest cosine with
any token of that pack's training prompts, and it adds ``exp(s / token_temperature)`` to the pack's score
(a prompt's logits are the log of those sums; its weights their softmax). A token that some training prompt
held (``s = 1``) outweighs many that none held, so unseen words add little; a token every pack's prompts
share (the frame, a newline) adds the same to every pack. What decides is the tokens that belong to one
pack: its template's words, or its content when the skills' inputs differ. ``layer`` picks the hidden state: 0 (the default) is
the input embedding, where a token is nearest to itself whatever its context, so the vote is a bag-of-words
match; a later layer makes it contextual. No gradient step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from grafting.skillpack.pack import SkillPack
from grafting.skillpack.router import hidden_batches
from grafting.skillpack.routers.base import Router, one_hot, register


def token_states(model: nn.Module, tokenizer, prompts: Sequence[str], layer: int,
                 batch_size: int = 64) -> list[Tensor]:
    """Per prompt, ``(tokens, hidden)`` float32 unit vectors: hidden state ``layer`` of each real token."""
    return [nn.functional.normalize(row[real], dim=-1).cpu()
            for hidden, mask in hidden_batches(model, tokenizer, prompts, layer, batch_size)
            for row, real in zip(hidden, mask, strict=True)]


@register("tokens")
class TokenVote(Router):
    """Settings: ``layer`` (hidden state, 0 = input embeddings) and ``token_temperature`` (of each vote)."""

    prototypes: list[Tensor] | None = None  # per pack: its training prompts' distinct token vectors

    def _fit(self, model: nn.Module, tokenizer, packs: Mapping[str, SkillPack],
             prompts_by_pack: Mapping[str, Sequence[str]], seed: int) -> dict[str, float]:
        layer = int(self.settings.get("layer", 0))
        self.prototypes = [torch.unique(torch.cat(token_states(model, tokenizer, prompts_by_pack[n], layer)), dim=0)
                           for n in self.names]
        hits = total = 0
        for i, n in enumerate(self.names):
            chosen = self.weights(model, tokenizer, prompts_by_pack[n]).argmax(-1)
            hits, total = hits + int((chosen == i).sum()), total + len(chosen)
        return {"accuracy": hits / max(1, total), "prototypes": sum(len(p) for p in self.prototypes)}

    def votes(self, model: nn.Module, tokenizer, prompts: Sequence[str]) -> Tensor:
        """``(N, n_packs)``: each prompt's weights, the softmax of ``log Σ_tokens exp(s / T)`` per pack."""
        if self.prototypes is None:
            raise RuntimeError(f"router {self.name!r} is not fitted")
        temperature = float(self.settings.get("token_temperature", 0.05))
        rows = []
        for tokens in token_states(model, tokenizer, prompts, int(self.settings.get("layer", 0))):
            similarity = torch.stack([(tokens @ p.T).max(-1).values for p in self.prototypes], dim=-1)
            rows.append(torch.softmax(torch.logsumexp(similarity / temperature, dim=0), dim=-1))
        return torch.stack(rows) if rows else torch.zeros(0, len(self.names))

    def weights(self, model: nn.Module, tokenizer, prompts: Sequence[str]) -> Tensor:
        return one_hot(self.votes(model, tokenizer, prompts).argmax(-1).tolist(), len(self.names))

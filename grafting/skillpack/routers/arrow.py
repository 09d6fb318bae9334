"""``arrow``: zero-training routing from the packs alone (Arrow, Ostapenko et al., 2024), per prompt.

In each module a pack changes, the pack's prototype is the top right singular vector of its delta: the input
direction the pack's change responds to most. A token's input ``x`` to that module votes for the packs in
proportion to ``|<v_pack, x>|`` (normalised over the packs, so every token and module has one vote); a prompt
goes to the pack with the largest mean vote over its tokens and the modules. No prompt is seen in fitting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from grafting.generation import eval_mode, padding_side
from grafting.skillpack.pack import SkillPack
from grafting.skillpack.routers.base import Router, one_hot, register


def _input_space(delta: Tensor, module: nn.Module) -> Tensor:
    """``delta`` as ``(out, in)``: an ``nn.Linear`` stores it so; GPT-2's ``Conv1D`` stores ``(in, out)``."""
    return delta if isinstance(module, nn.Linear) else delta.T


def prototypes(delta: Tensor, rank: int = 1) -> Tensor:
    """``(in, rank)``: the top ``rank`` right singular vectors of an ``(out, in)`` delta (unit columns)."""
    _, _, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    return vh[:rank].T.contiguous()


@register("arrow")
class Arrow(Router):
    """Settings: ``rank`` (singular vectors per prototype; a vote is the norm of the projection onto them)."""

    trains_on_prompts = False
    protos: dict[str, Tensor] | None = None  # module name -> (in, n_packs, rank)

    def _fit(self, model: nn.Module, tokenizer, packs: Mapping[str, SkillPack],
             prompts_by_pack: Mapping[str, Sequence[str]], seed: int) -> dict[str, float]:
        rank = int(self.settings.get("rank", 1))
        deltas = {n: packs[n].decompress() for n in self.names}
        modules = dict(model.named_modules())
        shared = set.intersection(*(set(d) for d in deltas.values()))
        self.protos = {}
        for key in sorted(shared):
            name = key.removesuffix(".weight")
            module = modules.get(name)
            if not key.endswith(".weight") or module is None or deltas[self.names[0]][key].ndim != 2 \
                    or not (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"):
                continue  # embeddings (their input is a token id), norms and biases have no input direction
            self.protos[name] = torch.stack([prototypes(_input_space(deltas[n][key], module), rank)
                                             for n in self.names], dim=1)
        if not self.protos:
            raise ValueError("arrow: the packs change no linear module in common; nothing to route on")
        return {"modules": float(len(self.protos))}

    @torch.no_grad()
    def votes(self, model: nn.Module, tokenizer, prompts: Sequence[str], batch_size: int = 64) -> Tensor:
        """``(N, n_packs)``: each prompt's mean vote per pack over its tokens and the prototype modules."""
        if self.protos is None:
            raise RuntimeError(f"router {self.name!r} is not fitted")
        device = next(model.parameters()).device
        rows = []
        with eval_mode(model), padding_side(tokenizer, "right"):
            for start in range(0, len(prompts), batch_size):
                enc = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True).to(device)
                rows.append(self._batch_votes(model, enc))
        return torch.cat(rows) if rows else torch.zeros(0, len(self.names))

    def _batch_votes(self, model: nn.Module, enc) -> Tensor:
        """One padded batch: a forward pass whose pre-hooks add each prototype module's votes."""
        modules = dict(model.named_modules())
        mask = enc["attention_mask"].float()
        total = torch.zeros(mask.shape[0], len(self.names))

        def hook_for(name: str):
            def hook(_module, args):
                x = args[0].float()  # (B, T, in)
                proj = torch.einsum("bti,ipr->btpr", x, self.protos[name].to(x.device)).norm(dim=-1)
                share = proj / proj.sum(-1, keepdim=True).clamp_min(1e-12)  # one vote per token
                total.add_(((share * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).cpu())
            return hook

        handles = [modules[name].register_forward_pre_hook(hook_for(name)) for name in self.protos]
        try:
            model(**enc, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return total / len(self.protos)

    def weights(self, model: nn.Module, tokenizer, prompts: Sequence[str]) -> Tensor:
        return one_hot(self.votes(model, tokenizer, prompts).argmax(-1).tolist(), len(self.names))

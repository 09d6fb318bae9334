"""Preference pairs for DPO: one prompt with a chosen and a rejected response, tokenised like SFT rows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from grafting.data.datasets import pad_collate

log = logging.getLogger(__name__)


def _encode(tokenizer, prompt: str, response: str, max_length: int) -> dict[str, torch.Tensor] | None:
    """Prompt + response + EOS, labels on the response only (as :class:`TaskSFTDataset`)."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if not p or len(p) + len(r) > max_length:
        return None
    return {"input_ids": torch.tensor(p + r), "labels": torch.tensor([-100] * len(p) + r)}


class PreferenceDataset(Dataset):
    """Rows ``{input_ids, labels, rejected_input_ids, rejected_labels}``; the SFT term uses the chosen side.

    Pairs whose chosen and rejected responses are equal carry no preference and are dropped.
    """

    def __init__(self, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], tokenizer,
                 max_length: int = 128):
        if not len(prompts) == len(chosen) == len(rejected):
            raise ValueError(f"{len(prompts)} prompts, {len(chosen)} chosen, {len(rejected)} rejected")
        self.items: list[dict[str, torch.Tensor]] = []
        dropped = 0
        for prompt, good, bad in zip(prompts, chosen, rejected, strict=True):
            c, r = _encode(tokenizer, prompt, good, max_length), _encode(tokenizer, prompt, bad, max_length)
            if c is None or r is None or good.strip() == bad.strip():
                dropped += 1
                continue
            self.items.append({**c, "rejected_input_ids": r["input_ids"], "rejected_labels": r["labels"]})
        if dropped:
            log.info("PreferenceDataset: dropped %d of %d pairs (equal, empty or too long).", dropped, len(prompts))
        if not self.items:
            raise ValueError("no usable preference pair: every chosen response equals the rejected one")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def preference_collate(pad_id: int) -> Callable[[list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]:
    """Pads the chosen and the rejected sides separately (``rejected_*`` keys for the latter)."""
    base = pad_collate(pad_id)

    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        chosen = base([{"input_ids": it["input_ids"], "labels": it["labels"]} for it in items])
        rejected = base([{"input_ids": it["rejected_input_ids"], "labels": it["rejected_labels"]} for it in items])
        return {**chosen, **{f"rejected_{k}": v for k, v in rejected.items()}}

    return collate

"""(b) Truncated forwards (``surgery.residual_before``) against full forwards with a hook (the simple way).

The simple way runs the whole model, logits included, and reads block k's input from a pre-hook.
The truncated forward stops at block k. Both run under ``inference_mode``; their outputs are checked equal.
"""

from __future__ import annotations

from functools import partial

import torch

from benchmarks.common import Settings, median_time, random_batch, random_model, ratio
from benchmarks.result import Measurement
from grafting import surgery


def full_forward_with_hook(model, batch: dict, k: int) -> torch.Tensor:
    captured = {}

    def grab(_module, args, kwargs):
        captured["h"] = args[0] if args else kwargs["hidden_states"]

    handle = surgery.get_blocks(model)[k].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    finally:
        handle.remove()
    return captured["h"]


def run(s: Settings) -> list[Measurement]:
    out = []
    for name in dict.fromkeys([s.small_model, s.large_model]):
        model = random_model(name, s.device)
        n_layers = len(surgery.get_blocks(model))
        batch = random_batch(model, *((4, 32) if s.quick else (8, 128)), s.device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        for k, where in ((1, "early"), (n_layers - 1, "late")):
            with torch.inference_mode():
                fast_out = surgery.residual_before(model, ids, k, mask)
                simple_out = full_forward_with_hook(model, batch, k)
                fast = median_time(partial(surgery.residual_before, model, ids, k, mask), s.device, s.repeats)
                simple = median_time(partial(full_forward_with_hook, model, batch, k), s.device, s.repeats)
            out.append(Measurement(
                "b", f"residual entering block {k} of {n_layers} ({where}), {name}, {tuple(ids.shape)} tokens",
                "truncated forward", fast, "full forward + hook", simple, ratio=ratio(simple, fast),
                floor=2.0 if where == "early" else None,
                extra={"max_abs_difference": float((fast_out - simple_out).abs().max())}))
    return out

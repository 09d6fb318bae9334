"""``align.method=distill``: after the paper's phases, both translators learn the training items' answers from
the tuned donor (teacher) while general text keeps the host's own distributions (``align.distill``)."""

from __future__ import annotations

from grafting.stages.common import distill_from_config


def refine(ctx, grafted, controls, host, tuned_model, tokenizer) -> dict[str, dict]:
    history = {"distill": distill_from_config(ctx, grafted, host, tuned_model, tokenizer)}
    # the same phase for the vanilla-block control: what the translators learn by themselves (the identity
    # control stays untrained)
    if "VanillaGraft" in controls:
        history["distill_vanilla"] = distill_from_config(ctx, controls["VanillaGraft"], host, tuned_model, tokenizer,
                                                         name="distill_vanilla")
    return history

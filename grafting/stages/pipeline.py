"""Stage ``pipeline`` (the main job): tiny pair -> fine-tune -> align -> graft -> evaluate -> tables.

Besides Tuned / Grafted / Vanilla / Host, two controls are scored (``evaluation.controls``), since a
transfer claim is a claim against them:

- ``VanillaGraft``: the same aligned translators around the *vanilla* block (what strategy
  ``original`` holds just before the swap). What the translators alone make of the host.
- ``IdentityGraft``: the tuned block between untrained identity translators. What the block
  does without alignment.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import grafting.stages.align_methods as align_methods
from grafting import api, surgery
from grafting.evaluation.tables import pipeline_markdown
from grafting.plain import plain
from grafting.run_context import RunContext
from grafting.stages.common import (
    align_from_config,
    evaluate,
    finetune_or_resume,
    host_lora_control,
    load_pair,
)

log = logging.getLogger(__name__)


def run(cfg) -> dict[str, Any]:
    ctx = RunContext.from_config(cfg)
    try:
        donor, host, tokenizer = load_pair(ctx)
        layer, dest = int(cfg.graft.layer), int(cfg.graft.dest)
        log.info("1/4 fine-tune: donor %s block %d on %s (%s, %d steps)", cfg.donor.name, layer, cfg.task.kind,
                 cfg.finetune.method, cfg.finetune.steps)
        tuned_model, tuned_block = finetune_or_resume(ctx, donor, tokenizer)

        # original: align around the vanilla block, then swap in the tuned one; direct: tuned from the start.
        start = tuned_block if cfg.graft.strategy == "direct" else None
        span = int(cfg.graft.get("span", 1))
        grafted = api.build_graft(host, donor, layer, dest, cfg.graft.translator, block=start, span=span)
        log.info("2/4 align: Pre-T then Post-T around host %s block %d (%s loss, %d steps each)", cfg.host.name,
                 dest, cfg.loss.kind, cfg.align.steps)
        history = align_from_config(ctx, grafted, host, donor, tokenizer)
        controls = {}
        if cfg.evaluation.get("controls", True):
            controls["VanillaGraft"] = copy.deepcopy(grafted)
            if cfg.graft.strategy == "direct":
                api.swap_donor_block_(controls["VanillaGraft"], surgery.get_blocks(donor)[layer])
            controls["IdentityGraft"] = api.build_graft(host, donor, layer, dest, cfg.graft.translator,
                                                        block=tuned_block, span=span)
        if cfg.graft.strategy == "original":
            api.swap_donor_block_(grafted, tuned_block)
        # the chosen method's phases after the paper's (grafting/stages/align_methods/<align.method>.py)
        method = align_methods.get(str(cfg.align.get("method", "paper")))
        log.info("3/4 align.method=%s", cfg.align.get("method", "paper"))
        history.update(method.refine(ctx, grafted, controls, host, tuned_model, tokenizer))
        api.save_graft_with_manifest(grafted, ctx.run_dir / "graft", {"graft": plain(cfg.graft)},
                                     overwrite=bool(cfg.get("overwrite", False) or cfg.get("resume", False)))

        if cfg.evaluation.get("host_lora", False):
            controls["HostLoRA"] = host_lora_control(ctx, host, grafted, tokenizer)
        models = {"Tuned": tuned_model, "Grafted": grafted, **controls, "Vanilla": donor, "Host": host}
        log.info("4/4 score: %s", ", ".join(models))
        cache = ctx.cache_dir if cfg.evaluation.get("cache", False) else None
        scores = evaluate(cfg, models, tokenizer, host=host, cache_dir=cache)
        markdown = pipeline_markdown(scores)
        print(markdown)
        for name, s in scores.items():
            ctx.log_metrics(s, prefix=f"{name}/")
        results = {"stage": "pipeline", "models": scores, "align": history, "config": plain(cfg)}
        ctx.save_results(results, markdown)
        return results
    finally:
        ctx.finish()

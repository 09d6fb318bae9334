"""Stage ``finetune``: fine-tune block ``graft.layer`` of the donor on the task and save it."""

from __future__ import annotations

from typing import Any

from grafting import surgery
from grafting.evaluation.tables import TASK_METRICS, metric_table
from grafting.models.loading import load_model
from grafting.run_context import RunContext
from grafting.stages.common import evaluate, finetune_or_resume


def run(cfg) -> dict[str, Any]:
    ctx = RunContext.from_config(cfg)
    try:
        donor, tokenizer = load_model(cfg.donor, "donor", ctx.cache_dir)
        surgery.check_block_index(donor, int(cfg.graft.layer), "graft.layer")
        tuned, _ = finetune_or_resume(ctx, donor, tokenizer)
        scores = evaluate(cfg, {"Tuned": tuned, "Vanilla": donor}, tokenizer, host=donor, language=False)
        table = metric_table(scores, TASK_METRICS, "Table 1: modular addition (fine-tuning only)")
        print(table)
        ctx.log_metrics(scores["Tuned"], prefix="tuned/")
        ctx.save_results({"stage": "finetune", "models": scores}, table)
        return scores
    finally:
        ctx.finish()

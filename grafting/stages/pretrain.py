"""Stage ``pretrain``: build (or reuse from the cache) the tiny pretrained host and donor."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from grafting.models.loading import load_model
from grafting.models.pretrained_tiny import pretrain_report
from grafting.run_context import RunContext


def run(cfg) -> dict[str, Any]:
    ctx = RunContext.from_config(cfg)
    try:
        reports = {}
        for key in ("donor", "host"):
            spec = OmegaConf.to_container(cfg[key], resolve=True)
            load_model(spec, key, ctx.cache_dir)  # pretrains on a cache miss
            if spec["source"] == "tiny_pretrained":
                reports[key] = pretrain_report(spec, ctx.cache_dir)
        for key, rep in reports.items():
            print(f"{key} {rep['name']}: held-out ppl {rep['heldout_ppl']} "
                  f"(random init {rep['random_init_heldout_ppl']}), {rep['steps']} steps, {rep['train_seconds']} s")
        ctx.log_metrics({f"{k}/heldout_ppl": r["heldout_ppl"] for k, r in reports.items()}, prefix="pretrain/")
        ctx.save_results({"stage": "pretrain", "models": reports})
        return reports
    finally:
        ctx.finish()

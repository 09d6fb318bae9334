"""Stage ``pretrain``: build (or reuse from the cache) the tiny pretrained host and donor.

With ``stage.ship=true`` the two models are (re)trained from scratch and copied into
``grafting/assets/<name>``: this is the command that regenerates the shipped pair.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from grafting.models import shipped
from grafting.models.pretrained_tiny import cache_path, pretrain_report
from grafting.plain import plain_dict
from grafting.pretraining import pretrain
from grafting.run_context import RunContext


def run(cfg) -> dict[str, Any]:
    ctx = RunContext.from_config(cfg)
    ship = bool(cfg.stage.get("ship", False))
    try:
        reports = {}
        for key in ("donor", "host"):
            spec = plain_dict(cfg[key])
            if spec["source"] != "tiny_pretrained":
                continue
            spec["progress_bar"] = bool(cfg.trainer.get("enable_progress_bar", False))
            if ship:  # never trust a cache for what ships: train it here
                reports[key] = pretrain(spec, ctx.run_dir / "pretrained")
                command = "python train.py " + " ".join(shlex.quote(a) for a in sys.argv[1:] if not a.startswith("hydra."))
                shipped.ship(spec["shipped"], cache_path(spec, ctx.run_dir / "pretrained"), reports[key], command,
                             overwrite=True)
            else:
                try:
                    reports[key] = pretrain_report(spec, ctx.cache_dir)
                except FileNotFoundError:
                    reports[key] = pretrain(spec, ctx.cache_dir)
        for key, rep in reports.items():
            print(f"{key} {rep['name']}: held-out ppl {rep['heldout_ppl']} "
                  f"(random init {rep['random_init_heldout_ppl']}), {rep['recipe']['pretrain']['steps']} steps, "
                  f"{rep['train_seconds']} s")
        ctx.log_metrics({f"{k}/heldout_ppl": r["heldout_ppl"] for k, r in reports.items()}, prefix="pretrain/")
        ctx.save_results({"stage": "pretrain", "models": reports})
        return reports
    finally:
        ctx.finish()

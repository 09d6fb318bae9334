"""Stage ``pretrain_mlm``: the offline MLM scorer; ``stage.ship=true`` writes it into the package."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from grafting.models import shipped
from grafting.plain import plain_dict
from grafting.pretraining.tiny_mlm import pretrain_mlm
from grafting.run_context import RunContext


def run(cfg) -> dict[str, Any]:
    ctx = RunContext.from_config(cfg)
    try:
        recipe = plain_dict(cfg.stage.recipe)
        out = ctx.run_dir / "tiny-mlm"
        report = pretrain_mlm(recipe, out, progress_bar=bool(cfg.trainer.get("enable_progress_bar", False)))
        if cfg.stage.get("ship", False):
            command = "python train.py " + " ".join(shlex.quote(a) for a in sys.argv[1:] if not a.startswith("hydra."))
            shipped.ship("tiny-mlm", out, report, command, overwrite=True)
        print(f"tiny-mlm: held-out masked-token accuracy {report['heldout_masked_accuracy']:.3f} "
              f"in {report['train_seconds']} s")
        ctx.save_results({"stage": "pretrain_mlm", "models": {"tiny-mlm": report}})
        return report
    finally:
        ctx.finish()

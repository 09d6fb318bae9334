"""Stage ``align``: train Pre-T then Post-T of a graft (the paper's two phases); see grafting/graft/alignment.py."""

from __future__ import annotations

from typing import Any

from grafting import api
from grafting.errors import ConfigError
from grafting.plain import plain
from grafting.run_context import RunContext
from grafting.stages.common import align_from_config, load_pair


def run(cfg) -> dict[str, Any]:
    if cfg.align.get("method", "paper") != "paper":
        raise ConfigError("align.method", f"stage=align runs the paper's two phases only; align.method="
                                          f"{cfg.align.method} needs the tuned donor: use stage=pipeline.")
    ctx = RunContext.from_config(cfg)
    try:
        donor, host, tokenizer = load_pair(ctx)
        layer = int(cfg.graft.layer)
        tuned = api.load_tuned_block(cfg.graft.tuned_block, donor, layer) if cfg.graft.tuned_block else None
        start = tuned if (tuned is not None and cfg.graft.strategy == "direct") else None
        grafted = api.build_graft(host, donor, layer, int(cfg.graft.dest), cfg.graft.translator, block=start,
                                  span=int(cfg.graft.get("span", 1)))
        history = align_from_config(ctx, grafted, host, donor, tokenizer)
        if tuned is not None and cfg.graft.strategy == "original":
            api.swap_donor_block_(grafted, tuned)
        api.save_graft_with_manifest(grafted, ctx.run_dir / "graft", {"graft": plain(cfg.graft)},
                                     overwrite=bool(cfg.get("overwrite", False) or cfg.get("resume", False)))
        for phase, h in history.items():
            print(f"{phase}-T: held-out loss {h['val_loss_before']:.4f} -> {h['val_loss_after']:.4f}")
        ctx.save_results({"stage": "align", "align": history})
        return history
    finally:
        ctx.finish()

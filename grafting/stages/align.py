"""Stage ``align``: train Pre-T then Post-T of a graft (the paper's two phases)."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from grafting.artifacts import load_tensors_with_manifest, save_tensors_with_manifest
from grafting.data.datamodule import build_datamodule
from grafting.errors import ConfigError
from grafting.grafted import build_grafted, save_graft, validate_graft
from grafting.losses import mse
from grafting.models.loading import load_model, same_tokenizer
from grafting.modules.translator_align import PHASES, TranslatorAlignModule
from grafting.run_context import RunContext
from grafting.stages.finetune import load_tuned_block
from grafting.translators import least_squares_map


def load_models(ctx: RunContext):
    """Donor, host and the shared tokenizer, with the graft spec validated before any training."""
    cfg = ctx.cfg
    donor, tokenizer = load_model(cfg.donor, "donor", ctx.cache_dir)
    host, host_tokenizer = load_model(cfg.host, "host", ctx.cache_dir)
    if not same_tokenizer(tokenizer, host_tokenizer):
        raise ConfigError("host", f"host {cfg.host.name!r} and donor {cfg.donor.name!r} use different tokenizers; "
                                  "alignment compares the two models on the same tokens.")
    validate_graft(host, donor, int(cfg.graft.layer), int(cfg.graft.dest))
    return donor, host, tokenizer


@torch.no_grad()
def _mean_loss(module: TranslatorAlignModule, batches: list[dict[str, torch.Tensor]]) -> float:
    device = next(module.translator.parameters()).device
    losses = [module.loss({k: v.to(device) for k, v in b.items()}).item() for b in batches]
    return sum(losses) / max(1, len(losses))


@torch.no_grad()
def _affine_map(translator: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` of an affine translator, read off its outputs at 0 and at the unit vectors."""
    param = next(translator.parameters())
    d_in = translator.in_features
    bias = translator(torch.zeros(1, d_in, device=param.device))[0]
    weight = translator(torch.eye(d_in, device=param.device)) - bias
    return weight.T.cpu(), bias.cpu()


@torch.no_grad()
def distance_to_optimum(module: TranslatorAlignModule, fit_batches, held_out) -> dict[str, float]:
    """How far the trained translator is from the closed-form MSE optimum fitted on ``fit_batches``.

    ``mse`` and ``lstsq_mse`` are the held-out MSEs of the translator and of the optimum;
    ``mse_excess = mse / lstsq_mse - 1``; ``weight_rel_distance = ||W - W*|| / ||W*||``.
    """
    w_opt, b_opt = least_squares_map(*module.captured(fit_batches))
    x, y = module.captured(held_out)
    weight, bias = _affine_map(module.translator)
    ours = mse(x @ weight.T + bias, y).item()
    best = mse(x @ w_opt.T + b_opt, y).item()
    return {"mse": ours, "lstsq_mse": best, "mse_excess": ours / max(best, 1e-12) - 1.0,
            "weight_rel_distance": ((weight - w_opt).norm() / w_opt.norm()).item()}


def align_graft(ctx: RunContext, grafted, host, donor, tokenizer) -> dict[str, Any]:
    """Phase ``pre`` then phase ``post``; returns the held-out loss before and after each phase.

    ``align.solver=adam`` trains each translator with Adam for ``align.steps`` (from the identity, or
    from the least-squares optimum with ``align.init=lstsq``); ``align.solver=lstsq`` sets it to the
    closed-form MSE optimum on ``align.lstsq_batches`` training batches and trains nothing. With a
    residual loss, each phase also reports how far it ended from that optimum.
    """
    cfg, al = ctx.cfg, ctx.cfg.align
    data = build_datamodule(cfg.dataloader, cfg.task, tokenizer, int(cfg.seed))
    held_out = [b for _, b in zip(range(int(al.limit_val_batches)), data.val_dataloader(), strict=False)]
    solver, init = str(al.get("solver", "adam")), str(al.get("init", "identity"))
    history: dict[str, Any] = {}
    for phase in PHASES:
        ctx.reseed()
        module = TranslatorAlignModule(grafted, host, donor, int(cfg.graft.layer), phase, cfg.loss.kind,
                                       cfg.loss.distance, lr=float(al.lr), weight_decay=float(al.weight_decay),
                                       temperature=float(cfg.loss.temperature),
                                       reading=str(cfg.loss.get("reading", "hidden")))
        fit_batches = [b for _, b in zip(range(int(al.get("lstsq_batches", 16))), data.train_dataloader(),
                                         strict=False)] if cfg.loss.kind == "residual" else []
        saved = ctx.run_dir / "align" / phase
        if cfg.get("resume", False) and (saved / "manifest.json").is_file():
            # finished before an interruption: read it back instead of training it again
            tensors, manifest = load_tensors_with_manifest(saved)
            module.translator.load_state_dict(tensors)
            history[phase] = manifest["history"]
            continue
        before = _mean_loss(module, held_out)
        if solver == "lstsq" or init == "lstsq":
            module.fit_least_squares_(fit_batches)
        if solver == "adam":
            ctx.fit(module, data, f"align_{phase}", int(al.steps),
                    val_check_interval=min(int(al.val_check_interval), int(al.steps)),
                    check_val_every_n_epoch=None, limit_val_batches=int(al.limit_val_batches))
        module.to("cpu")
        history[phase] = {"val_loss_before": before, "val_loss_after": _mean_loss(module, held_out)}
        if fit_batches:
            history[phase]["optimum"] = distance_to_optimum(module, fit_batches, held_out)
        save_tensors_with_manifest(saved, module.translator.state_dict(),
                                   {"kind": "translator", "phase": phase, "history": history[phase]}, overwrite=True)
    ctx.log_metrics({f"{p}/{k}": v for p, h in history.items() for k, v in h.items()}, prefix="align/")
    return history


def run(cfg) -> dict[str, Any]:
    ctx = RunContext.from_config(cfg)
    try:
        donor, host, tokenizer = load_models(ctx)
        layer = int(cfg.graft.layer)
        tuned = load_tuned_block(cfg.graft.tuned_block, donor, layer) if cfg.graft.tuned_block else None
        start = tuned if (tuned is not None and cfg.graft.strategy == "direct") else None
        grafted = build_grafted(host, donor, layer, int(cfg.graft.dest), cfg.graft.translator, block=start)
        history = align_graft(ctx, grafted, host, donor, tokenizer)
        if tuned is not None and cfg.graft.strategy == "original":
            from grafting.grafted import swap_donor_block_

            swap_donor_block_(grafted, tuned)
        save_graft(grafted, ctx.run_dir / "graft", {"graft": OmegaConf.to_container(cfg.graft, resolve=True)},
                   overwrite=bool(cfg.get("overwrite", False) or cfg.get("resume", False)))
        for phase, h in history.items():
            print(f"{phase}-T: held-out loss {h['val_loss_before']:.4f} -> {h['val_loss_after']:.4f}")
        ctx.save_results({"stage": "align", "align": history})
        return history
    finally:
        ctx.finish()

"""Align a graft's translators: phase ``pre`` (Pre-T), then phase ``post`` (Post-T).

``solver="adam"`` trains each translator for ``steps`` (from the identity, or from the least-squares
optimum with ``init="lstsq"``, or from the best scaled rotation with ``init="procrustes"``); ``solver="lstsq"`` sets it to the closed-form MSE optimum on
``lstsq_batches`` training batches and trains nothing; ``solver="procrustes"`` likewise, to the best
scaled rotation (orthogonal Procrustes; semi-orthogonal between different widths). With a residual loss, each phase also reports
how far it ended from that optimum.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from grafting import cache
from grafting.artifacts import (
    load_tensors_with_manifest,
    save_tensors_with_manifest,
    write_tensors_with_manifest,
)
from grafting.errors import ArtifactError
from grafting.graft.grafted import graft_of
from grafting.graft.losses import mse
from grafting.graft.translators import least_squares_map
from grafting.modules.translator_align import PHASES, PrefixCache, TranslatorAlignModule
from grafting.schema.graft import AlignConfig  # the recipe: the align and loss nodes (defaults, checks)
from grafting.training import Fit, plain_fit

log = logging.getLogger(__name__)


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


def save_translators(grafted: torch.nn.Module, folder: Path, history: dict[str, Any],
                     recipe: dict[str, Any] | None = None) -> None:
    """Both translators of ``grafted`` and their alignment ``history``: a cache entry (:func:`grafting.cache.store`).

    Jobs of a sweep may align the same graft at the same time: a whole copy already there is kept.
    ``recipe``: what the entry's key hashes, recorded in its manifest.
    """
    graft = graft_of(grafted)[1]
    tensors = {f"{phase}.{k}": v for phase, t in (("pre", graft.pre_translator), ("post", graft.post_translator))
               for k, v in t.state_dict().items()}
    manifest = {"kind": "aligned_translators", "history": history}
    try:
        cache.store(folder, lambda tmp: write_tensors_with_manifest(tmp, tensors, manifest), recipe=recipe)
    except OSError as err:  # a read-only or full cache costs a recompute later, not this run
        log.warning("aligned translators not cached at %s: %s", folder, err)


def load_translators_(grafted: torch.nn.Module, folder: Path) -> dict[str, Any]:
    """Load translators saved by :func:`save_translators` into ``grafted``; return their history."""
    tensors, manifest = load_tensors_with_manifest(folder)
    if manifest.get("kind") != "aligned_translators":
        raise ArtifactError(f"{folder} does not hold aligned translators (kind={manifest.get('kind')!r}).")
    graft = graft_of(grafted)[1]
    for phase, translator in (("pre", graft.pre_translator), ("post", graft.post_translator)):
        translator.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{phase}.")})
    return manifest["history"]


def align_graft(grafted: torch.nn.Module, host: torch.nn.Module, donor: torch.nn.Module, data: Any,
                config: AlignConfig = AlignConfig(), *, layer: int | None = None, fit: Fit = plain_fit,
                reseed: Callable[[], None] | None = None, save_dir: Path | None = None,
                resume: bool = False) -> dict[str, Any]:
    """Phase ``pre`` then phase ``post`` on ``data`` (a datamodule with a validation split).

    Returns the held-out loss before and after each phase. ``layer`` is the donor block (default:
    the graft's own); ``reseed`` runs before each phase; each trained translator is saved under
    ``save_dir/<phase>``, and with ``resume`` a phase saved there is read back instead of trained.
    """
    layer = graft_of(grafted)[1].layer if layer is None else layer
    held_out = [b for _, b in zip(range(int(config.limit_val_batches)), data.val_dataloader(), strict=False)]
    history: dict[str, Any] = {}
    prefix = PrefixCache()  # the host prefix of each batch: computed by Pre-T, read back by Post-T
    for phase in PHASES:
        if reseed is not None:
            reseed()
        module = TranslatorAlignModule(grafted, host, donor, layer, phase, config.loss, config.distance,
                                       lr=config.lr, weight_decay=config.weight_decay,
                                       temperature=config.temperature, reading=config.reading,
                                       prefix_cache=prefix)
        fit_batches = [b for _, b in zip(range(int(config.lstsq_batches)), data.train_dataloader(),
                                         strict=False)] if config.loss == "residual" else []
        saved = save_dir / phase if save_dir is not None else None
        if resume and saved is not None and (saved / "manifest.json").is_file():
            # finished before an interruption: read it back instead of training it again
            tensors, manifest = load_tensors_with_manifest(saved)
            module.translator.load_state_dict(tensors)
            history[phase] = manifest["history"]
            continue
        before = _mean_loss(module, held_out)
        if config.solver in ("lstsq", "procrustes"):
            module.fit_least_squares_(fit_batches, config.solver)
        elif config.init in ("lstsq", "procrustes"):
            module.fit_least_squares_(fit_batches, config.init)
        if config.solver == "adam":
            fit(module, data, f"align_{phase}", int(config.steps),
                val_check_interval=min(int(config.val_check_interval), int(config.steps)),
                check_val_every_n_epoch=None, limit_val_batches=int(config.limit_val_batches))
        module.to("cpu")
        history[phase] = {"val_loss_before": before, "val_loss_after": _mean_loss(module, held_out)}
        if fit_batches:
            history[phase]["optimum"] = distance_to_optimum(module, fit_batches, held_out)
        if saved is not None:
            save_tensors_with_manifest(saved, module.translator.state_dict(),
                                       {"kind": "translator", "phase": phase, "history": history[phase]},
                                       overwrite=True)
    return history

"""``align.method=distill``: a task-logit phase through the translators, after the paper's two phases.

See :mod:`grafting.modules.translator_distill` for the loss. The teacher is the tuned donor; task
batches come from the fine-tuning data, text batches from the alignment data. Before and after,
both KLs are measured on held-out text and on the first task batches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from grafting.artifacts import load_tensors_with_manifest, save_tensors_with_manifest
from grafting.modules.translator_distill import TranslatorDistillModule
from grafting.schema.graft import DistillConfig  # the recipe: the align.distill node
from grafting.training import Fit, plain_fit


class TaskAndText(L.LightningDataModule):
    """One task batch and one text batch per step (Lightning cycles the shorter loader)."""

    def __init__(self, task: L.LightningDataModule, text: L.LightningDataModule):
        super().__init__()
        self.task, self.text = task, text

    def train_dataloader(self) -> dict[str, Any]:
        self.task.trainer = self.text.trainer = self.trainer  # each sees the world size, as on its own
        return {"task": self.task.train_dataloader(), "text": self.text.train_dataloader()}

    def state_dict(self) -> dict[str, Any]:  # both positions in their epochs, for a bit-exact resume
        return {"task": self.task.state_dict(), "text": self.text.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task.load_state_dict(state["task"])
        self.text.load_state_dict(state["text"])


@torch.no_grad()
def _mean_losses(module: TranslatorDistillModule, batches: list[dict[str, Any]]) -> dict[str, float]:
    device = next(module.translators.parameters()).device
    totals: dict[str, float] = {}
    for batch in batches:
        moved = {part: {k: v.to(device) for k, v in b.items()} for part, b in batch.items()}
        for name, value in module.losses(moved).items():
            totals[name] = totals.get(name, 0.0) + value.item() / len(batches)
    return totals


def distill_translators(grafted: torch.nn.Module, host: torch.nn.Module, teacher: torch.nn.Module,
                        task_data: L.LightningDataModule, text_data: L.LightningDataModule,
                        config: DistillConfig = DistillConfig(), *, fit: Fit = plain_fit,
                        reseed: Callable[[], None] | None = None, save_dir: Path | None = None,
                        resume: bool = False, stage: str = "align_distill") -> dict[str, Any]:
    """Train both translators of ``grafted`` towards ``teacher`` on task data and towards ``host`` on text.

    Returns the task and text KLs before and after. With ``resume``, translators saved in ``save_dir``
    are read back instead of trained.
    """
    if reseed is not None:
        reseed()
    module = TranslatorDistillModule(grafted, host, teacher, lr=config.lr, weight_decay=config.weight_decay,
                                     task_weight=config.task_weight, text_weight=config.text_weight)
    if resume and save_dir is not None and (save_dir / "manifest.json").is_file():
        tensors, manifest = load_tensors_with_manifest(save_dir)
        module.translators.load_state_dict(tensors)
        return manifest["history"]
    n = int(config.eval_batches)
    held_out = [{"task": task, "text": text} for _, task, text in
                zip(range(n), task_data.train_dataloader(), text_data.val_dataloader(), strict=False)]
    before = _mean_losses(module, held_out)
    fit(module, TaskAndText(task_data, text_data), stage, int(config.steps), limit_val_batches=0)
    module.to("cpu")
    after = _mean_losses(module, held_out)
    history = {**{f"{k}_kl_before": v for k, v in before.items()}, **{f"{k}_kl_after": v for k, v in after.items()}}
    if save_dir is not None:
        save_tensors_with_manifest(save_dir, module.translators.state_dict(),
                                   {"kind": "translators", "phase": "distill", "history": history}, overwrite=True)
    return history

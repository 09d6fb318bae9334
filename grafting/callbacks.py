"""Lightning callbacks shared by every training stage."""

from __future__ import annotations

import lightning as L
import torch


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or inf."""


class FiniteLossGuard(L.Callback):
    """Stop the run with a message naming the stage, step and loss when the loss is NaN or inf.

    Raising (rather than skipping the step) keeps the last checkpoint written before the fault as
    the newest one, so a resume starts from good weights.
    """

    def __init__(self, stage: str):
        self.stage = stage

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        # Checked before backward and the optimizer step, so the bad loss never touches the weights.
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"[{self.stage}] non-finite loss {loss.detach().float().item()} at step {trainer.global_step}; "
                "the last good checkpoint is kept. Lower the learning rate, check the data, "
                "or use trainer.precision=32-true."
            )


class TrainableOnlyCheckpoint:
    """LightningModule mixin: checkpoints hold only the trainable parameters.

    Frozen models are rebuilt from the config on resume, so saving them again would only make
    every checkpoint the size of several models.
    """

    strict_loading = False  # the frozen weights are absent from the checkpoint on purpose

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

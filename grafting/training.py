"""How a LightningModule gets trained: the ``Fit`` callable the typed API takes, and a plain default.

Stages pass ``RunContext.fit`` (the Hydra trainer, loggers, checkpoints, resume); a notebook passes
nothing and gets :func:`plain_fit`, a single-device Trainer with no logger and no checkpoints.
"""

from __future__ import annotations

from typing import Any, Protocol

import lightning as L

from grafting.progress import show_progress


class Fit(Protocol):
    def __call__(self, module: L.LightningModule, data: Any, stage: str, max_steps: int, **overrides: Any) -> None:
        """Train ``module`` on ``data`` for ``max_steps``; ``stage`` names the step (logs, checkpoints)."""


def plain_fit(module: L.LightningModule, data: Any, stage: str, max_steps: int, **overrides: Any) -> None:
    """``Trainer.fit`` on one device (GPU when there is one), no logger, no checkpoint, bars in a terminal."""
    settings = dict(accelerator="auto", devices=1, precision="32-true", logger=False, enable_checkpointing=False,
                    enable_model_summary=False, num_sanity_val_steps=0, enable_progress_bar=show_progress())
    trainer = L.Trainer(max_steps=max_steps, **{**settings, **overrides})
    if isinstance(data, L.LightningDataModule):
        trainer.fit(module, datamodule=data)
    else:  # a DataLoader
        trainer.fit(module, train_dataloaders=data)

"""LightningModule for the distillation phase (``align.method=distill``, beyond the paper).

After the paper's two phases, both translators train together on two batches per step:

- a task batch (prompt + answer): the grafted model's next-token distributions on the answer
  tokens are matched to a teacher's (the tuned donor), so the translators learn to carry what
  the grafted block computes into the host;
- a general-text batch: the grafted model's distributions are matched to the host's own at every
  position, which holds the host's language.

Only the translators move. Run with the *vanilla* block in the graft it is the control: whatever
that reaches on the task, the translators learned by themselves.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from grafting.callbacks import TrainableOnlyCheckpoint
from grafting.graft_block import graft_of
from grafting.losses import kl

IGNORE = -100


def answer_kl(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the positions that predict an answer token (``labels != -100``)."""
    predicts_answer = labels[:, 1:] != IGNORE  # logits at t predict token t + 1
    return kl(student[:, :-1][predicts_answer], teacher[:, :-1][predicts_answer])


class TranslatorDistillModule(TrainableOnlyCheckpoint, L.LightningModule):
    """Trains Pre-T and Post-T of ``grafted`` on ``{"task": batch, "text": batch}`` steps."""

    def __init__(self, grafted: nn.Module, host: nn.Module, teacher: nn.Module, lr: float = 1e-3,
                 weight_decay: float = 0.0, task_weight: float = 1.0, text_weight: float = 1.0):
        super().__init__()
        self.grafted, self.host, self.teacher = grafted, host, teacher
        self.lr, self.weight_decay = lr, weight_decay
        self.task_weight, self.text_weight = task_weight, text_weight
        for model in (grafted, host, teacher):
            model.requires_grad_(False)
            model.eval()
        graft = graft_of(grafted)[1]
        self.translators = nn.ModuleList([graft.pre_translator, graft.post_translator])
        self.translators.requires_grad_(True)

    def _logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits

    def losses(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        task, text = batch["task"], batch["text"]
        with torch.no_grad():
            teacher, host = self._logits(self.teacher, task), self._logits(self.host, text)
        return {"task": answer_kl(self._logits(self.grafted, task), teacher, task["labels"]),
                "text": kl(self._logits(self.grafted, text), host, text["attention_mask"])}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        parts = self.losses(batch)
        for name, value in parts.items():
            self.log(f"align/distill/{name}_kl", value, prog_bar=True)
        return self.task_weight * parts["task"] + self.text_weight * parts["text"]

    def on_train_start(self) -> None:
        for model in (self.grafted, self.host, self.teacher):  # Lightning set them to train mode
            model.eval()

    def configure_optimizers(self):
        return torch.optim.Adam(self.translators.parameters(), lr=self.lr, weight_decay=self.weight_decay)

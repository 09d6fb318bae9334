"""LightningModule for causal-LM pretraining of a whole (tiny) model."""

from __future__ import annotations

import math

import lightning as L
import torch

from grafting.metrics.divergence import shifted_nll


def with_warmup_cosine(opt: torch.optim.Optimizer, warmup_steps: int, max_steps: int) -> dict:
    """Lightning optimizer config: linear warm-up, then cosine decay to 10% of the peak rate, per step.

    Not ``transformers.optimization.get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=0.1)``: its
    warm-up starts at rate 0 (``step / warmup``), ours at ``1 / warmup`` (``(step + 1) / warmup``), so it
    trains other weights than the shipped pair's recipe (and get_cosine_schedule_with_warmup decays to 0).
    """

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class CausalLMModule(L.LightningModule):
    """Trains every weight of ``model`` with next-token loss; AdamW with linear warm-up then cosine decay."""

    def __init__(self, model: torch.nn.Module, lr: float = 3e-3, weight_decay: float = 0.01,
                 warmup_steps: int = 50, max_steps: int = 1000):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"], use_cache=False).loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("pretrain/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("pretrain/val_loss", self(batch), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return with_warmup_cosine(opt, self.warmup_steps, self.max_steps)


@torch.no_grad()
def heldout_perplexity(model: torch.nn.Module, loader, max_batches: int | None = None) -> float:
    """Token-weighted perplexity of ``model`` over ``loader`` (labels -100 are ignored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, tokens = shifted_nll(logits, batch["labels"])
        total_nll += nll
        total_tokens += tokens
    model.train(was_training)
    return math.exp(total_nll / max(1, total_tokens))

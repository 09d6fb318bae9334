"""LightningModule that fine-tunes one block of a model on a task, by LoRA (peft) or the full block.

Every weight outside block ``layer`` stays bit-identical: LoRA is restricted with peft's
``layers_to_transform``, full-block tuning freezes everything else.
"""

from __future__ import annotations

import copy

import lightning as L
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from grafting import names, surgery
from grafting.callbacks import TrainableOnlyCheckpoint
from grafting.errors import ConfigError
from grafting.graft.losses import labelled_lm_loss
from grafting.threads import single_op_threads

METHODS = names.FINETUNE_METHODS


class LayerFinetuneModule(TrainableOnlyCheckpoint, L.LightningModule):
    """Trains only block ``layer`` of a copy of ``model``; the model passed in is never modified."""

    def __init__(self, model: nn.Module, layer: int, method: str = "lora", lr: float = 1e-3,
                 lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0, weight_decay: float = 0.0):
        super().__init__()
        if method not in METHODS:
            raise ConfigError("finetune.method", f"unknown method {method!r}; allowed: {', '.join(METHODS)}.")
        surgery.check_block_index(model, layer, "graft.layer")
        self.layer, self.method, self.lr, self.weight_decay = layer, method, lr, weight_decay
        base = copy.deepcopy(model)
        if method == "lora":
            arch = surgery.architecture(base)
            config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                target_modules=list(arch.lora_targets), layers_to_transform=[layer],
                                layers_pattern=arch.blocks.rsplit(".", 1)[-1])
            self.model = get_peft_model(base, config)
        else:
            base.requires_grad_(False)
            surgery.get_blocks(base)[layer].requires_grad_(True)
            self.model = base
        self.model.train()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # the unembedding only where there is a label (the answer tokens): same loss, a fraction of the cost;
        # one thread per op (grafting/threads.py): a tiny block's ops are too short to split, and on a shared
        # machine threads that meet at every op wait for each other
        model = self.model.get_base_model() if self.method == "lora" else self.model
        with single_op_threads():
            return labelled_lm_loss(model, batch)

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        with single_op_threads():
            super().backward(loss, *args, **kwargs)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("finetune/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("finetune/val_loss", self(batch), sync_dist=True)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def tuned_model(self) -> nn.Module:
        """A plain transformers model: the base with the tuned block (LoRA merged into a copy)."""
        model = copy.deepcopy(self.model)
        if self.method == "lora":
            model = model.merge_and_unload()
        model.requires_grad_(False)
        return model.eval()

    def tuned_block(self) -> nn.Module:
        return surgery.get_blocks(self.tuned_model())[self.layer]

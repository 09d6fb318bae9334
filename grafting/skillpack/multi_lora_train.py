"""LightningModule that trains several LoRA adapters in one pass (the SkillPack equal-budget baseline).

Each adapter of :class:`grafting.skillpack.multi_lora.MultiLoraModel` is trained as
:class:`grafting.modules.skillpack_train.SkillPackTrainModule` trains one (``method="lora"``, SFT): same
batches, AdamW with the adapter's own learning rate and no weight decay, linear warm-up then cosine
decay. The summed loss gives each adapter exactly its own gradient, since no adapter's parameters
reach another's loss.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from grafting.modules.causal_lm import with_warmup_cosine
from grafting.skillpack.multi_lora import MultiLoraModel


class MultiLoraTrainModule(L.LightningModule):
    """SFT of every adapter of ``model`` on the same batches; ``weight_decay`` as SkillPackTrainModule's."""

    def __init__(self, model: MultiLoraModel, weight_decay: float = 0.0, warmup_steps: int = 10,
                 max_steps: int = 200):
        super().__init__()
        self.model = model
        self.weight_decay, self.warmup_steps, self.max_steps = weight_decay, warmup_steps, max_steps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        losses = self.model.losses(batch)
        self.log("skill/sft_loss", losses.mean(), prog_bar=True)
        return losses.sum()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.param_groups(), weight_decay=self.weight_decay)
        return with_warmup_cosine(opt, self.warmup_steps, self.max_steps)

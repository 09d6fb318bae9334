"""LightningModule for the distillation phase (``align.method=distill``, beyond the paper).

After the paper's two phases, both translators train together on two batches per step:

- a task batch (prompt + answer): the grafted model's next-token distributions on the answer
  tokens are matched to a teacher's (the tuned donor), so the translators learn to carry what
  the grafted block computes into the host;
- a general-text batch: the grafted model's distributions are matched to the host's own at every
  position, which holds the host's language.

Only the translators move. Run with the *vanilla* block in the graft it is the control: whatever
that reaches on the task, the translators learned by themselves.

Each step computes only what the loss reads: the unembeddings run at the answer positions of the task
batch, the text KL is the chunked :func:`grafting.graft.losses.lens_kl` (no positions x vocabulary tensor), and
the host's forward on the text shares the grafted model's frozen prefix (host blocks before the graft).
:meth:`TranslatorDistillModule.plain_losses` is the simple path it is tested against.
"""

from __future__ import annotations

import threading

import lightning as L
import torch
from torch import nn

from grafting import surgery
from grafting.callbacks import TrainableOnlyCheckpoint
from grafting.graft.block import graft_of
from grafting.graft.losses import kl, lens_kl
from grafting.threads import run_all, single_op_threads

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
        self.dest, graft = graft_of(grafted)
        self.graft = graft
        self.translators = nn.ModuleList([graft.pre_translator, graft.post_translator])
        self.translators.requires_grad_(True)
        # The fast path needs plain linear unembeddings, and the grafted model's final norm and unembedding
        # to be the host's (build_grafted copies them; the text KL reads both streams through one of them).
        heads = [m.get_output_embeddings() for m in (grafted, host, teacher)]
        same = all(torch.equal(a, b) for a, b in zip(self._head_tensors(grafted), self._head_tensors(host),
                                                        strict=True))
        self.fast = same and all(type(h) is nn.Linear for h in heads) and all(
            getattr(m, "base_model", m) is not m for m in (grafted, host, teacher))

    @staticmethod
    def _head_tensors(model: nn.Module) -> list[torch.Tensor]:
        return [*surgery.final_norm(model).state_dict().values(), *model.get_output_embeddings().state_dict().values()]

    def _logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits

    def plain_losses(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The simple path: full forwards of all four model calls, logits at every position."""
        task, text = batch["task"], batch["text"]
        with torch.no_grad():
            teacher, host = self._logits(self.teacher, task), self._logits(self.host, text)
        return {"task": answer_kl(self._logits(self.grafted, task), teacher, task["labels"]),
                "text": kl(self._logits(self.grafted, text), host, text["attention_mask"])}

    @staticmethod
    def _final_hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The stream after the final norm (what the unembedding reads), at every position."""
        return model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                use_cache=False).last_hidden_state

    def _task_kl(self, task: dict[str, torch.Tensor]) -> torch.Tensor:
        keep = task["labels"][:, 1:] != IGNORE  # hidden at t predicts token t + 1: only answer positions
        with torch.no_grad():
            teacher = self.teacher.get_output_embeddings()(self._final_hidden(self.teacher, task)[:, :-1][keep])
        student = self.grafted.get_output_embeddings()(self._final_hidden(self.grafted, task)[:, :-1][keep])
        return kl(student, teacher)

    def _text_kl(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        # One forward of the grafted model; the host's stream continues from the graft's input (the shared
        # frozen prefix) through host blocks j.. and the final norm, called as the graft was called.
        captured: dict = {}
        me = threading.get_ident()  # the task loss may run the same graft at once on another thread

        def on_graft(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            if threading.get_ident() != me:
                return
            captured["hidden"] = args[0] if args else kwargs["hidden_states"]
            captured["args"], captured["kwargs"] = args[1:], dict(kwargs)
            captured["kwargs"].pop("hidden_states", None)

        handle = self.graft.register_forward_pre_hook(on_graft, with_kwargs=True)
        try:
            student = self._final_hidden(self.grafted, text)
        finally:
            handle.remove()
        with torch.no_grad():
            target = captured["hidden"]
            for block in surgery.get_blocks(self.host)[self.dest:]:
                target = block(target, *captured["args"], **captured["kwargs"])
                target = target[0] if isinstance(target, tuple) else target
            target = surgery.final_norm(self.host)(target)
        return lens_kl(student, target, self.grafted.get_output_embeddings(), text["attention_mask"])

    def losses(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``{"task": KL to the teacher on answer tokens, "text": KL to the host on text}`` of one step.

        The two are independent: side by side on the job's threads, each op on one thread (grafting/threads.py).
        """
        if not self.fast:
            return self.plain_losses(batch)
        with single_op_threads():
            cpu = batch["text"]["input_ids"].device.type == "cpu"  # on a GPU one stream does both
            task, text = run_all([lambda: self._task_kl(batch["task"]), lambda: self._text_kl(batch["text"])],
                                 None if cpu else 1)
        return {"task": task, "text": text}

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        with single_op_threads():  # as the forward: one thread per op, whatever the job's thread count
            super().backward(loss, *args, **kwargs)

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

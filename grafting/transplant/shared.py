"""What the untouched target computes once and every transplant condition reuses.

A sweep measures KL(target ‖ transplanted) on the same general-text chunks for every condition. The
target's side never changes, so :class:`KLReference` captures it once: its probabilities ``p_a`` and
negative entropy ``Σ p_a log p_a`` per position. Each condition then runs only the transplanted model
and needs, per position, ``KL = Σ p_a log p_a − Σ p_a z_b + logsumexp(z_b)`` (``z_b`` its logits, since
``log p_b = z_b − logsumexp(z_b)`` and ``Σ p_a = 1``): one fused dot product and one log-sum-exp,
where :func:`grafting.transplant.metrics.general_text_kl` materialises ``log p_b``, a difference and a
product over the whole positions × vocabulary. Same KL up to float rounding (``tests/test_transplant_shared.py``).

Forwards run over sub-batches of ``sub_batch`` texts so that no positions × vocabulary tensor above
16 MB is allocated: at 32 × 64 × 4096 floats (32 MB) each such tensor was a fresh ``mmap``, and the page
faults cost a third of the stage's CPU time; :func:`grafting.memory.reuse_freed_memory` keeps blocks
under 32 MB in the heap. Fewer, larger forwards cost less Python per token: on an idle machine 16 texts
per forward ran the KL 1.17× faster than 8 and 32 another 7% faster (benchmark (l)); with the other core
busy, 32 ran 1.3× slower than 16. Every size gives the same KL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from grafting.transplant._inputs import accepts, eval_mode, forward_kwargs

__all__ = ["KLReference"]


@dataclass
class KLReference:
    """The reference model's next-token distribution on fixed chunks, computed once.

    Attributes:
        chunks: ``(n_texts, seq)`` token ids; every position is a real token.
        batch_size: texts per batch of the reported mean (``mean_kl``'s batches, each weighted by its tokens).
        sub_batch: texts per forward.
        p: one ``(sub_batch, seq, vocab)`` float32 tensor of probabilities per sub-batch, in order.
        neg_entropy: the matching ``(sub_batch, seq)`` tensors of ``Σ p log p``.
    """

    chunks: torch.Tensor
    batch_size: int
    sub_batch: int
    p: list[torch.Tensor]
    neg_entropy: list[torch.Tensor]

    @classmethod
    @torch.no_grad()
    def capture(cls, model: nn.Module, chunks: torch.Tensor, batch_size: int, sub_batch: int = 16) -> KLReference:
        """Run ``model`` once over ``chunks`` and keep what every later KL needs of it."""
        p, neg_entropy = [], []
        with eval_mode(model):
            for _, ids in _sub_batches(chunks, batch_size, sub_batch):
                logp = F.log_softmax(_logits(model, ids).float(), dim=-1)
                p.append(logp.exp())
                neg_entropy.append(torch.linalg.vecdot(p[-1], logp))
        return cls(chunks, batch_size, sub_batch, p, neg_entropy)

    @torch.no_grad()
    def kl(self, model: nn.Module) -> tuple[float, torch.Tensor]:
        """Mean KL(reference ‖ model) in nats/token (weighted as ``mean_kl``), and each text's mean KL."""
        per_batch: dict[int, list[torch.Tensor]] = {}
        with eval_mode(model):
            for (batch, ids), p_a, neg_h in zip(_sub_batches(self.chunks, self.batch_size, self.sub_batch),
                                                self.p, self.neg_entropy, strict=True):
                z = _logits(model, ids).float()
                per_batch.setdefault(batch, []).append(neg_h - torch.linalg.vecdot(p_a, z) + torch.logsumexp(z, -1))
        total, count = 0.0, 0
        for rows in per_batch.values():
            kl = torch.cat(rows)
            total += float(kl.mean()) * kl.numel()
            count += kl.numel()
        per_text = torch.cat([torch.cat(rows) for rows in per_batch.values()]).mean(-1)
        return total / count, per_text


def _sub_batches(chunks: torch.Tensor, batch_size: int, sub_batch: int) -> Iterator[tuple[int, torch.Tensor]]:
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start:start + batch_size]
        for sub in range(0, len(batch), sub_batch):
            yield start, batch[sub:sub + sub_batch]


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    kw = forward_kwargs(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    if accepts(model, "use_cache"):
        kw["use_cache"] = False  # one forward: a KV cache would only be built and dropped
    return model(**kw).logits

"""KL divergence between two next-token distributions, position by position: the one KL the metrics share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_per_position(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(logits_p) || softmax(logits_q))`` over the last dimension, one value per position.

    Log-softmax is taken in float32 (so identical logits give exactly 0); ``logits_q`` is moved to
    ``logits_p``'s device. Callers choose which positions count and how to average them.
    """
    if logits_p.shape[-1] != logits_q.shape[-1]:
        raise ValueError(f"vocab sizes differ: {logits_p.shape[-1]} vs {logits_q.shape[-1]}")
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float().to(log_p.device), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def shifted_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """``(sum of next-token NLLs, tokens counted)``: position t predicts ``labels[t+1]``; -100 is skipped.

    Summed in float64, so the perplexity ``exp(sum / count)`` does not depend on how texts are batched.
    """
    labels = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    keep = labels != -100
    return nll[keep].double().sum().item(), int(keep.sum().item())

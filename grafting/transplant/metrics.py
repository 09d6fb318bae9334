"""Transplant metrics: TIR, gap Recovery, and KL to the target on general text."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from grafting.transplant._inputs import eval_mode, forward_kwargs

__all__ = ["MetricResult", "general_text_kl", "recovery", "tir"]


@dataclass(frozen=True)
class MetricResult:
    """A metric that may be undefined: ``value`` is None and ``reason`` says why (never a silent inf/nan).

    ``float(result)`` gives ``nan`` when undefined, for loggers that only take numbers.
    """

    value: float | None
    reason: str | None = None

    @property
    def defined(self) -> bool:
        """True when ``value`` is a number."""
        return self.value is not None

    def __float__(self) -> float:
        return math.nan if self.value is None else float(self.value)


def tir(acc_transplanted: float, acc_target: float, eps: float = 0.0) -> MetricResult:
    """Transplant Improvement Ratio: ``acc_transplanted / acc_target``.

    Args:
        acc_transplanted: score of the target after transplantation.
        acc_target: score of the untouched target.
        eps: ``|acc_target| <= eps`` counts as zero (default: exactly zero).

    Returns:
        The ratio, or value None with reason "zero target" when the target scores 0.
    """
    if abs(acc_target) <= eps:
        return MetricResult(None, "zero target")
    return MetricResult(acc_transplanted / acc_target)


def recovery(
    acc_transplanted: float, acc_target: float, acc_source: float, eps: float = 1e-12
) -> MetricResult:
    """Gap recovery: ``(acc_transplanted - acc_target) / (acc_source - acc_target)``.

    1.0 means the transplant closed the whole gap; above 1 it overshot the source.

    Args:
        acc_transplanted: score of the target after transplantation.
        acc_target: score of the untouched target.
        acc_source: score of the source model.
        eps: ``|acc_source - acc_target| < eps`` counts as no gap.

    Returns:
        The recovery, or value None with reason "zero gap" when source and target score the same.
    """
    gap = acc_source - acc_target
    if abs(gap) < eps or gap == 0:
        return MetricResult(None, "zero gap")
    return MetricResult((acc_transplanted - acc_target) / gap)


@torch.no_grad()
def general_text_kl(
    model_a: nn.Module,
    model_b: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> float:
    """Mean KL(model_a || model_b) of next-token distributions over non-pad positions.

    Typically ``model_a`` is the untouched target and ``model_b`` the transplanted one: how much did the
    transplant move the target on text unrelated to the task. Log-softmax is taken in float32.

    Args:
        model_a: reference model (the target).
        model_b: compared model (the transplanted target); same vocabulary.
        input_ids: ``(batch, seq)`` ids, left- or right-padded.
        attention_mask: ``(batch, seq)``; 0 marks padding. ``None`` means no padding.

    Returns:
        KL in nats averaged over every real token position.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    with eval_mode(model_a, model_b):
        logits_a = model_a(**forward_kwargs(model_a, batch)).logits
        logits_b = model_b(**forward_kwargs(model_b, batch)).logits
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logit shapes differ: {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}")
    logp_a = F.log_softmax(logits_a.float(), dim=-1)
    logp_b = F.log_softmax(logits_b.float().to(logp_a.device), dim=-1)
    kl = (logp_a.exp() * (logp_a - logp_b)).sum(-1)  # (batch, seq)
    mask = attention_mask.to(kl.device).bool()
    n = int(mask.sum())
    if n == 0:
        raise ValueError("attention_mask has no real tokens")
    return float(kl[mask].sum() / n)

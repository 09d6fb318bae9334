"""(h) The logit-lens KL loss of one alignment step: closed-form backward against autograd through the formula.

The residual loss of the default protocol decodes both streams into vocabulary-sized distributions,
so one step computes a KL over ``positions x vocabulary`` values. ``grafting.losses.kl`` takes a
custom backward (``softmax(pred) - p``) when the target needs no gradient; the simple path keeps the
target in the graph, which sends autograd through log_softmax, sub, mul and sum.
"""

from __future__ import annotations

import torch

from benchmarks.common import Settings, median_time, ratio
from benchmarks.result import Measurement
from grafting.losses import kl


def run(s: Settings) -> list[Measurement]:
    positions, vocab = (256, 512) if s.quick else (2048, 4096)  # full: the default protocol's 32 x 64 batch
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(positions, vocab, generator=gen).to(s.device).requires_grad_(True)
    target = torch.randn(positions, vocab, generator=gen).to(s.device)
    target_in_graph = target.clone().requires_grad_(True)

    def step(t: torch.Tensor) -> torch.Tensor:
        loss = kl(pred, t)
        loss.backward()
        grad, pred.grad = pred.grad, None
        return grad

    fast = median_time(lambda: step(target), s.device, s.repeats)
    simple = median_time(lambda: step(target_in_graph), s.device, s.repeats)
    difference = (step(target) - step(target_in_graph)).abs().max().item()
    return [Measurement("h", f"KL loss forward + backward, {positions} positions x {vocab} vocabulary", "closed-form backward",
                        fast, "autograd through the formula", simple, ratio=ratio(simple, fast),
                        extra={"max_abs_grad_difference": difference})]

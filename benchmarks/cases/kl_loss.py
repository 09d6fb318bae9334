"""(h) The logit-lens KL of one alignment step: chunked and fused (``lens_kl``) against the plain formula.

The default protocol's residual loss decodes both streams into vocabulary-sized distributions, so one
step computes a KL over ``positions x vocabulary`` values. The plain path unembeds both streams in full
(two ``positions x vocabulary`` logits tensors) and takes :func:`grafting.graft.losses.kl` (whose backward is
the closed form ``softmax(pred) - p``); :func:`grafting.graft.losses.lens_kl` computes logits, KL and the
gradient wrt the hidden stream chunk by chunk, in one pass. A second row keeps the earlier comparison:
``kl``'s closed-form backward against autograd through the formula. One thread, CPU seconds.
"""

from __future__ import annotations

import torch

from benchmarks.common import Settings, ratio
from benchmarks.result import Measurement
from benchmarks.roofline import _cpu_time
from grafting.graft.losses import kl, lens_kl


def run(s: Settings) -> list[Measurement]:
    positions, d, vocab = (256, 32, 512) if s.quick else (2048, 128, 4096)  # full: the default 32 x 64 batch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        unembed = torch.nn.Linear(d, vocab, bias=False).requires_grad_(False)
        with torch.no_grad():
            unembed.weight.copy_(torch.randn(vocab, d, generator=gen) * d**-0.5)
        hidden = torch.randn(positions, d, generator=gen).requires_grad_(True)
        target = torch.randn(positions, d, generator=gen)

        def grad_of(loss: torch.Tensor) -> torch.Tensor:
            loss.backward()
            grad, hidden.grad = hidden.grad, None
            return grad

        def fused() -> torch.Tensor:
            return grad_of(lens_kl(hidden, target, unembed))

        def plain(target_in_graph: bool = False) -> torch.Tensor:
            with torch.set_grad_enabled(target_in_graph):
                target_logits = unembed(target)
            if target_in_graph:
                target_logits = target_logits.detach().requires_grad_(True)
            return grad_of(kl(unembed(hidden), target_logits))

        repeats = s.repeats + 2
        fast, simple, autograd = (_cpu_time(fused, repeats), _cpu_time(plain, repeats),
                                  _cpu_time(lambda: plain(True), repeats))
        chunked_difference = (fused() - plain()).abs().max().item()
        closed_difference = (plain() - plain(True)).abs().max().item()
    finally:
        torch.set_num_threads(threads)
    what = f"logit-lens KL forward + backward, {positions} positions x {d} hidden x {vocab} vocabulary"
    return [Measurement("h", what, "chunked, fused (lens_kl)", fast, "unembed both, then kl()", simple,
                        ratio=ratio(simple, fast), extra={"max_abs_grad_difference": chunked_difference}),
            Measurement("h", what + ": kl() on the logits", "closed-form backward", simple,
                        "autograd through the formula", autograd, ratio=ratio(autograd, simple),
                        extra={"max_abs_grad_difference": closed_difference})]

"""(g) Tokens per second of the three training loops at pythia-70m size, as a fraction of matmul peak.

The machine's peak is measured the same way as the training steps: the median time of a large fp32
matmul. Each loop's FLOPs per step are counted by ``torch.utils.flop_counter.FlopCounterMode`` over
one real step (forward + backward), so no FLOP formula is assumed. The step time is the steady-state
time per step (median) under the Lightning Trainer, as in case (a).
"""

from __future__ import annotations

import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.cases.overhead import lightning_steps
from benchmarks.common import Settings, median_time, random_batch, random_model
from benchmarks.result import Measurement
from grafting.graft.grafted import build_grafted
from grafting.modules.layer_finetune import LayerFinetuneModule
from grafting.modules.skillpack_train import SkillPackTrainModule
from grafting.modules.translator_align import TranslatorAlignModule


def matmul_peak(device: torch.device, n: int = 2048) -> float:
    """FLOP/s of an ``n x n`` fp32 matmul: the machine's practical peak for this dtype."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / median_time(lambda: a @ b, device, repeats=5, warmup=2)


def step_flops(module, batch: dict) -> int:
    loss_of = module.loss if hasattr(module, "loss") else module.forward
    with FlopCounterMode(display=False) as counter:
        loss_of(batch).backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run(s: Settings) -> list[Measurement]:
    peak = matmul_peak(s.device, 256 if s.quick else 2048)
    donor = random_model(s.small_model, s.device, seed=0)
    host = random_model(s.small_model, s.device, seed=1)
    layer = 1
    grafted = build_grafted(host, donor, layer, layer, "linear").to(s.device)
    batch_size, seq = (4, 32) if s.quick else (8, 128)
    steps = 5 if s.quick else 8
    loops = {
        "fine-tuning (LoRA r=8 on one block)": lambda: LayerFinetuneModule(donor, layer, "lora").to(s.device),
        "alignment, phase pre": lambda: TranslatorAlignModule(grafted, host, donor, layer, "pre"),
        "alignment, phase post": lambda: TranslatorAlignModule(grafted, host, donor, layer, "post"),
        "SkillPack training (full delta)": lambda: SkillPackTrainModule(donor, "full", max_steps=steps).to(s.device),
    }
    out = []
    for label, build in loops.items():
        module = build()
        batches = [random_batch(host, batch_size, seq, s.device, seed=i) for i in range(steps)]
        flops = step_flops(module, batches[0])
        per_step = statistics.median(lightning_steps(module, batches, s.device))
        tokens = batch_size * seq
        out.append(Measurement(
            "g", f"{label}, {s.small_model}, {batch_size}x{seq} tokens", "tokens/s", tokens / per_step, unit="tokens/s",
            ratio=flops / per_step / peak,
            extra={"seconds_per_step": per_step, "GFLOP_per_step": flops / 1e9,
                   "achieved_GFLOP_s": flops / per_step / 1e9, "matmul_peak_GFLOP_s": peak / 1e9}))
    return out

"""(a) Framework overhead: a Lightning alignment step against a bare PyTorch loop doing the same math.

Both drive the same ``TranslatorAlignModule.loss`` and Adam on the same batches. The figure is the
median time per step (wall time between the starts of consecutive steps, after a warm-up, pooled
over the repeats), so it includes data loading, logging, hooks and the optimizer, but not the
one-off cost of ``fit``. The median, not the mean, because a 2-core machine has outlier steps.
"""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch

from benchmarks.common import Settings, random_batch, random_model, ratio, sync
from benchmarks.result import Measurement
from grafting.graft.grafted import build_grafted
from grafting.modules.translator_align import TranslatorAlignModule

WARMUP = 3


class _StepClock(L.Callback):
    def __init__(self, device: torch.device):
        self.device, self.starts = device, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        sync(self.device)
        self.starts.append(time.perf_counter())



def step_times(starts: list[float]) -> list[float]:
    """Durations of the steps after the warm-up (the last start only closes the last step)."""
    steady = starts[WARMUP:]
    return [b - a for a, b in zip(steady, steady[1:], strict=False)]


def lightning_steps(module: TranslatorAlignModule, batches: list, device: torch.device) -> list[float]:
    clock = _StepClock(device)
    trainer = L.Trainer(max_steps=len(batches), accelerator=device.type, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[clock])
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    return step_times(clock.starts)


def bare_steps(module: TranslatorAlignModule, batches: list, device: torch.device) -> list[float]:
    optimizer = module.configure_optimizers()
    starts = []
    for batch in batches:
        sync(device)
        starts.append(time.perf_counter())
        loss = module.loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return step_times(starts)


def run(s: Settings) -> list[Measurement]:
    donor = random_model(s.small_model, s.device, seed=0)
    host = random_model(s.small_model, s.device, seed=1)
    layer = 1
    grafted = build_grafted(host, donor, layer, layer, "linear").to(s.device)
    steps, batch, seq = (8, 4, 32) if s.quick else (30, 32, 64)  # the alignment dataloader's default batch
    batches = [random_batch(host, batch, seq, s.device, seed=i) for i in range(steps)]
    out = []
    for phase in ("pre", "post"):
        module = TranslatorAlignModule(grafted, host, donor, layer, phase)
        # One untimed round of each first: the first fit of a process warms thread pools and the
        # allocator for many steps, a one-off cost that is not the framework's per-step overhead.
        lightning_steps(module, batches[:WARMUP + 2], s.device)
        bare_steps(module, batches[:WARMUP + 2], s.device)
        lit, bare = [], []
        for _ in range(s.repeats):  # alternate, so slow drifts of the machine hit both
            lit += lightning_steps(module, batches, s.device)
            bare += bare_steps(module, batches, s.device)
        lit_s, bare_s = statistics.median(lit), statistics.median(bare)
        out.append(Measurement("a", f"alignment step, phase {phase}, block {layer} ({s.small_model}, {batch}x{seq} tokens)",
                               "Lightning Trainer", lit_s, "bare PyTorch loop", bare_s,
                               ratio=ratio(lit_s, bare_s), floor=1.10, higher_is_better=False))
    return out

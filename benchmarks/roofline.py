"""What a roofline needs: the machine's floors, a training step's FLOPs and compulsory bytes, its time per step.

- **Peak.** FLOP/s of a 2048^3 fp32 matmul (the practical peak of this dtype), **bandwidth**: bytes/s of
  a 256 MiB copy (read + write). Both measured on one thread in CPU seconds, as the steps are.
- **FLOPs** of one step (loss, backward) from ``torch.utils.flop_counter.FlopCounterMode``: matmuls and
  attention, not elementwise work, so no FLOP formula is assumed.
- **Bytes**: the traffic a fused implementation cannot avoid. Every parameter and buffer the step reads
  (once), the trainable ones' backward and optimizer update (gradient written and read, two Adam moments
  read and written, the weight written: 7 more passes) and every activation kept for backward (written
  once, read once). Logits and other temporaries that a fused step keeps in cache do not count.
- **Time** per step: the median over steady-state steps under the Lightning Trainer, in CPU seconds of
  the one thread that runs it (robust to other jobs sharing the machine) and in wall seconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

WARMUP = 2


def _cpu_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` fp32 matmul, in CPU time of the calling thread."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _cpu_time(lambda: a @ b, repeats, warmup=2)


def bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s of a large copy (each byte read once and written once)."""
    src = torch.randn(mib * 2**18)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / _cpu_time(lambda: dst.copy_(src), repeats, warmup=2)


class _Reads(TorchDispatchMode):
    """Records the storages every op reads."""

    def __init__(self):
        super().__init__()
        self.pointers: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for x in torch.utils._pytree.tree_leaves((args, kwargs or {})):
            if isinstance(x, torch.Tensor) and x.device.type != "meta":
                self.pointers.add(x.untyped_storage().data_ptr())
        return func(*args, **(kwargs or {}))


def step_cost(module: L.LightningModule, loss_of: Callable[[], torch.Tensor]) -> dict[str, float]:
    """FLOPs and compulsory bytes of one step ``loss_of().backward()`` (plus the optimizer update)."""
    weights = {t.untyped_storage().data_ptr(): t for t in [*module.parameters(), *module.buffers()]}
    saved: dict[int, int] = {}

    def pack(x: torch.Tensor) -> torch.Tensor:
        pointer = x.untyped_storage().data_ptr()
        if pointer not in weights:
            saved[pointer] = x.untyped_storage().nbytes()
        return x

    reads = _Reads()
    with FlopCounterMode(display=False) as counter, reads, torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss_of().backward()
    module.zero_grad(set_to_none=True)
    read = sum(t.untyped_storage().nbytes() for p, t in weights.items() if p in reads.pointers)
    trainable = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    activations = 2 * sum(saved.values())
    return {"flops": float(counter.get_total_flops()), "bytes": float(read + 7 * trainable + activations),
            "weight_bytes": float(read), "activation_bytes": float(activations)}


class _Clock(L.Callback):
    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.thread_time())


def _steady(starts: list[float]) -> list[float]:
    steady = starts[WARMUP:]
    return [b - a for a, b in zip(steady, steady[1:], strict=False)]


def step_times(module: L.LightningModule, batches: list) -> tuple[float, float]:
    """Median ``(CPU s, wall s)`` per step of ``module`` trained on ``batches`` by a Lightning Trainer."""
    clock = _Clock()
    trainer = L.Trainer(max_steps=len(batches), accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[clock])
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    return statistics.median(_steady(clock.cpu)), statistics.median(_steady(clock.wall))

"""(j) How cost grows: time and peak memory per protocol step against tokens per step (item 7 of the issue).

The training steps of the protocol (block fine-tune, Pre-T, Post-T) on the shipped tiny pair and on
``pythia-70m-random``, at 4 to 64 rows per batch (alignment rows are 64 tokens of text; fine-tune rows
are task prompts, ~28 tokens). Time is CPU seconds per step on one thread (median of the steps after a
warm-up, in a bare loop: forward, backward, Adam); peak memory is the growth of the resident set while
one step runs. The growth against model size at the default batch is case (i)'s table; the plot
``scaling.png`` shows both.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.cases.roofline_steps import batches, step_modules, tiny_pair
from benchmarks.common import Settings, peak_memory, random_model
from benchmarks.result import Measurement

STEPS = ("block fine-tune (LoRA r=8)", "alignment Pre-T", "alignment Post-T")


def _loss(module, batch) -> torch.Tensor:
    return module.loss(batch) if hasattr(module, "loss") else module(batch)


def time_and_memory(module, train: list) -> tuple[float, float]:
    """``(median CPU s per step, peak MiB of one step)`` of a bare training loop over ``train``."""
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer

    def step(batch) -> None:
        _loss(module, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(train[0])  # warm-up: allocator, optimizer state
    times = []
    for batch in train[1:]:
        start = time.thread_time()
        step(batch)
        times.append(time.thread_time() - start)
    peak, _ = peak_memory(lambda: step(train[0]), torch.device("cpu"))
    return sorted(times)[len(times) // 2], peak / 2**20


def sweep(label: str, host, donor, layer: int, tokenizer, rows: list[int], steps: int) -> list[dict[str, Any]]:
    out = []
    for n in rows:
        data = batches(tokenizer, steps, n, 64)
        for name, (build, kind) in step_modules(host, donor, layer, steps).items():
            if name not in STEPS:
                continue
            train = data[kind][:steps]
            tokens = sum(int(b["attention_mask"].sum()) for b in train) / len(train)
            cpu, mib = time_and_memory(build(), train)
            out.append({"models": label, "step": name, "rows": n, "tokens": tokens, "cpu_s": cpu, "peak_MiB": mib})
    return out


def run(s: Settings) -> list[Measurement]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        host, donor, tokenizer = tiny_pair()
        rows = [2, 4] if s.quick else [4, 8, 16, 32, 64]
        results = sweep("tiny pair", host, donor, 2, tokenizer, rows, 3 if s.quick else 4)
        if not s.quick:
            h, d = random_model("pythia-70m-random", torch.device("cpu"), 1), random_model("pythia-70m-random",
                                                                                          torch.device("cpu"), 0)
            results += sweep("pythia-70m-random", h, d, 3, tokenizer, rows, 3)
        return [Measurement("j", f"{r['step']}, {r['models']}, {r['rows']} rows ({r['tokens']:.0f} tokens)",
                            "CPU s/step", r["cpu_s"], unit="s",
                            extra={"tokens": r["tokens"], "us_per_token": 1e6 * r["cpu_s"] / r["tokens"],
                                   "peak_MiB": r["peak_MiB"]}) for r in results]
    finally:
        torch.set_num_threads(threads)

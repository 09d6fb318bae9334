"""(i) Roofline of every training step: FLOPs, compulsory bytes, time per step, ratio to the larger floor.

The steps of the three methods, at the default protocol's shapes (alignment: 32 x 64 tokens of text;
fine-tunes: 32 task prompts; distillation: one of each), on the shipped tiny pair and on the real-sized
random presets (``pythia-70m-random``, ``pythia-160m-random``; host seed 1, donor seed 0, the middle block).
Every step runs on one thread (the sweep runner's setting) under the Lightning Trainer; the floors are
measured on the same thread (:mod:`benchmarks.roofline`). The ratio is CPU seconds per step over
``max(FLOPs / peak, bytes / bandwidth)``; alignment and distillation on the tiny pair must be <= 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import Settings, peak_memory, random_model
from benchmarks.result import Measurement
from benchmarks.roofline import bandwidth, matmul_peak, step_cost, step_times

FLOOR = 2.0  # alignment and distillation on the tiny pair


def tiny_pair() -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    from grafting import api

    host, donor, tokenizer = api.load_pair("tiny-host", "tiny-vanilla")
    return host, donor, tokenizer


def batches(tokenizer, n: int, rows: int = 32, seq: int = 64) -> dict[str, list[dict[str, torch.Tensor]]]:
    """``n`` text batches (``rows x seq`` tokens of the built-in corpus) and ``n`` task batches (``rows`` prompts)."""
    from grafting import api

    text = api.build_datamodule(api.DataSpec(batch_size=rows, seq_len=seq), api.ModularAddition(), tokenizer, 0,
                                with_val=False).train_dataloader()
    task = api.task_data(api.ModularAddition(), tokenizer, rows, 0).train_dataloader()
    return {"text": [b for _, b in zip(range(n), text, strict=False)],
            "task": [b for _, b in zip(range(n), task, strict=False)]}


def step_modules(host, donor, layer: int, max_steps: int) -> dict[str, tuple[Callable[[], Any], str]]:
    """``label -> (build the LightningModule, which batches it trains on)``."""
    from grafting.graft.grafted import build_grafted
    from grafting.modules.layer_finetune import LayerFinetuneModule
    from grafting.modules.skillpack_train import SkillPackTrainModule
    from grafting.modules.translator_align import TranslatorAlignModule
    from grafting.modules.translator_distill import TranslatorDistillModule

    def align(phase: str):
        return lambda: TranslatorAlignModule(build_grafted(host, donor, layer, layer), host, donor, layer, phase,
                                             "residual", "kl", reading="logit_lens")

    return {
        "alignment Pre-T": (align("pre"), "text"),
        "alignment Post-T": (align("post"), "text"),
        "distillation": (lambda: TranslatorDistillModule(build_grafted(host, donor, layer, layer), host, donor),
                         "both"),
        "block fine-tune (LoRA r=8)": (lambda: LayerFinetuneModule(donor, layer, "lora"), "task"),
        "SkillPack training (full)": (lambda: SkillPackTrainModule(donor, "full", max_steps=max_steps), "task"),
    }


def _loss_of(module, batch) -> Callable[[], torch.Tensor]:
    if hasattr(module, "losses"):  # distillation: the weighted sum its training_step returns
        return lambda: sum(module.losses(batch).values())
    return lambda: module.loss(batch) if hasattr(module, "loss") else module(batch)


def measure_steps(label: str, host, donor, layer: int, data: dict, steps: int, bw: float,
                  only: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """One row per training step of :func:`step_modules`: cost, time and roofline ratio."""
    rows = []
    for name, (build, kind) in step_modules(host, donor, layer, steps).items():
        if only is not None and name not in only:
            continue
        train = ([{"task": a, "text": b} for a, b in zip(data["task"], data["text"], strict=False)]
                 if kind == "both" else data[kind])[:steps]
        module = build()
        cost = step_cost(module, _loss_of(module, train[0]))
        peak = matmul_peak()  # again next to each step: other jobs on the machine slow both alike
        cpu, wall = step_times(module, train)
        floor = max(cost["flops"] / peak, cost["bytes"] / bw)
        loss_of = _loss_of(module, train[0])
        memory, _ = peak_memory(lambda: loss_of().backward(), torch.device("cpu"))  # noqa: B023 (called here)
        module.zero_grad(set_to_none=True)
        rows.append({"step": name, "models": label, **cost, "cpu_s": cpu, "wall_s": wall, "peak_MiB": memory / 2**20,
                     "peak_flops": peak,
                     "params_M": sum(p.numel() for p in host.parameters()) / 1e6,
                     "compute_floor_s": cost["flops"] / peak, "memory_floor_s": cost["bytes"] / bw,
                     "ratio": cpu / floor})
    return rows


def run(s: Settings) -> list[Measurement]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bw = bandwidth(32 if s.quick else 256)
        host, donor, tokenizer = tiny_pair()
        steps = 5 if s.quick else 10
        data = batches(tokenizer, steps, *((4, 16) if s.quick else (32, 64)))
        pairs = [("tiny pair", lambda: (host, donor), 2)]
        for name in ([] if s.quick else ["pythia-70m-random", "pythia-160m-random"]):
            pairs.append((name, lambda name=name: (random_model(name, torch.device("cpu"), seed=1),
                                                   random_model(name, torch.device("cpu"), seed=0)), None))
        out = []
        for label, load, layer in pairs:
            h, d = load()
            layer = layer if layer is not None else len(h.gpt_neox.layers) // 2
            n = steps if label == "tiny pair" else WARMUP_REAL + 3
            for row in measure_steps(label, h, d, layer, data, n, bw):
                gated = label == "tiny pair" and row["step"].startswith(("alignment", "distillation"))
                out.append(Measurement(
                    "i", f"{row['step']}, {label} (block {layer})", "CPU s/step", row["cpu_s"], unit="s",
                    ratio=row["ratio"], floor=FLOOR if gated and not s.quick else None, higher_is_better=False,
                    extra={"GFLOP": row["flops"] / 1e9, "MB_moved": row["bytes"] / 1e6,
                           "compute_floor_s": row["compute_floor_s"], "memory_floor_s": row["memory_floor_s"],
                           "wall_s": row["wall_s"], "peak_MiB": row["peak_MiB"], "params_M": row["params_M"],
                           "peak_GFLOP_s": row["peak_flops"] / 1e9, "bandwidth_GB_s": bw / 1e9}))
        return out
    finally:
        torch.set_num_threads(threads)


WARMUP_REAL = 2

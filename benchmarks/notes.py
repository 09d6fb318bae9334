"""The prose under a case's title in RESULTS.md: what the figures mean, with the numbers read off the rows."""

from __future__ import annotations

from collections import defaultdict

from benchmarks.result import Measurement

ROOFLINE = (
    "FLOPs are counted by `FlopCounterMode` over one step (matmuls and attention; elementwise work is not "
    "counted, so it shows up as distance from the floor). Bytes are the traffic a fused step cannot avoid: "
    "every weight it reads once, the trainable weights' update (gradient, two Adam moments) and the activations "
    "kept for backward, written and read once. Both floors are measured on one thread of this machine "
    "(`benchmarks/roofline.py`: a 2048^3 matmul, a 256 MiB copy); the ratio is CPU seconds per step (one "
    "thread, under the Lightning Trainer) over the larger floor. Every step here is compute-bound: the memory "
    "floor is far below the compute floor. What is left above the floor is elementwise work the counter does "
    "not see (softmax and exp of the logit lens, GELU, attention's softmax, layer norms) and the tiny blocks' "
    "short ops.")

SWEEP = (
    "`docs/sweep.sh` (used by `docs/replicate.sh`) runs the jobs of a multirun side by side, one per core, "
    "each on `cores / JOBS` threads (joblib workers, `hydra/launcher=local_parallel`). Single-thread jobs do "
    "the same work in about the same CPU time whether they run side by side or in turn, so jobs per CPU-hour "
    "stay put and jobs per wall hour double on two free cores; a job on every core spends more CPU time per "
    "job, because the tiny models' short ops do not split well across threads.")


MALLOC = (
    "glibc serves a block above its mmap threshold with a fresh mapping and trims the heap's free top, so a "
    "training step that allocates and frees the same few-MB tensors faults their pages in again every step "
    "(in a VM a minor fault costs microseconds). `grafting.memory.reuse_freed_memory` (called by `train.py`, "
    "`evaluate.py` and this runner, in every process that runs a job) raises the mmap threshold to 32 MiB and "
    "the trim threshold to 1 GiB, so freed blocks are reused. Nothing numeric changes; the process keeps its "
    "peak memory. Each side runs in a fresh process (the setting is per process and one-way).")

LORA_JOB = (
    "End to end: `GRAFTING_CACHE_DIR=$(mktemp -d) OMP_NUM_THREADS=2 python train.py experiment=skillpack_budgets "
    "seed=0`, alone on this machine with the passes side by side, took 25 min 44 s of wall time (2898 s user; "
    "`/usr/bin/time -v`, 2026-12-07). The same job on one thread, before, took 45.4 min (the other core mostly "
    "busy). 114 of its 120 budget rows equal the committed seed-0 run's scores, every LoRA row among them; six "
    "compression rows differ by at most 0.003 (a word in 300 prompts), float-level: the fine-tunes whose deltas "
    "they compress ran on two threads, which sum in another order.")


def _bends(rows: list[Measurement]) -> str:
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for m in rows:
        step, models = m.what.split(", ")[:2]
        series[f"{step}, {models}"].append((m.extra["tokens"], m.extra["us_per_token"], m.extra["peak_MiB"]))
    out = []
    for label, points in series.items():
        points.sort()
        (t0, us0, _), (t1, us1, mib1) = points[0], points[-1]
        flat = next(t for t, us, _ in points if us <= 1.15 * us1)  # where per-token time is within 15% of the largest batch's
        out.append(f"- {label}: {us0:.0f} us/token at {t0:.0f} tokens, {us1:.0f} at {t1:.0f}; within 15% of that "
                   f"from {flat:.0f} tokens per step on; peak {mib1:.0f} MiB at {t1:.0f} tokens.")
    return "\n".join(out)


def notes(case: str, rows: list[Measurement]) -> str:
    if case == "i":
        return ROOFLINE
    if case == "k":
        return SWEEP
    if case == "n":
        return MALLOC
    if case == "l":
        return LORA_JOB
    if case == "j":
        return (
            "Per-token time falls as the batch grows until the fixed cost of a step (Python and Lightning "
            "per op, reading every weight once, the optimizer) is spread thin; from there it is flat, "
            "because every FLOP of a step grows with its tokens (attention at 64 tokens per row is a small "
            "share). Peak memory grows linearly with tokens (activations kept for backward, and the chunked "
            "logit lens's per-chunk logits, which stop growing once a batch has more positions than a chunk); "
            "at a real vocabulary it starts high, since the unembedding (50k x d) is read at every step. "
            "Against model size (case i and the left column of the figure), time grows with FLOPs, and at "
            "pythia's 50k vocabulary the logit lens is most of them: Pre-T and Post-T cost more than the "
            "fine-tune at every size above tiny.\n\n" + _bends(rows))
    return ""

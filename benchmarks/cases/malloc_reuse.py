"""(n) Freed memory reused (``grafting.memory.reuse_freed_memory``) against glibc's defaults: alignment steps.

Each side runs in its own process (glibc's thresholds are per process and one-way): the Pre-T step of the
main job (tiny pair, block 2, 32 x 64 tokens of text, logit-lens KL) on one thread, loss and backward, as
:mod:`benchmarks.cases.roofline_steps` builds it. Reported: CPU seconds per step (median) and the minor page
faults per step. The ratio is default / reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import Settings, ratio
from benchmarks.result import Measurement

ROOT = Path(__file__).resolve().parents[2]


def child(steps: int, quick: bool) -> None:
    """In a fresh process: time ``steps`` Pre-T steps; print ``{"cpu_s", "faults"}`` per step as JSON."""
    import resource
    import statistics
    import time

    import torch

    from benchmarks.cases.roofline_steps import _loss_of, batches, step_modules, tiny_pair

    torch.set_num_threads(1)
    host, donor, tokenizer = tiny_pair()
    data = batches(tokenizer, steps + 2, *((4, 16) if quick else (32, 64)))["text"]
    module = step_modules(host, donor, 2, steps)["alignment Pre-T"][0]()
    times, faults = [], []
    for i, batch in enumerate(data):
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.thread_time()
        _loss_of(module, batch)().backward()
        module.zero_grad(set_to_none=True)
        if i >= 2:  # warm-up: the first steps allocate for good
            times.append(time.thread_time() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"cpu_s": statistics.median(times), "faults": statistics.median(faults)}))


def _measure(reuse: bool, steps: int, quick: bool) -> dict[str, float]:
    code = ("from grafting.memory import reuse_freed_memory\n"
            f"assert reuse_freed_memory() is {reuse}\n"
            f"from benchmarks.cases.malloc_reuse import child\nchild({steps}, {quick})\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "GRAFTING_KEEP_MALLOC": "0" if reuse else "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(s: Settings) -> list[Measurement]:
    steps = 4 if s.quick else 20
    default, reused = _measure(False, steps, s.quick), _measure(True, steps, s.quick)
    return [Measurement("n", "alignment Pre-T step, tiny pair, one thread: freed memory reused (grafting.memory)",
                        "reused", reused["cpu_s"], "glibc's defaults", default["cpu_s"],
                        ratio=ratio(default["cpu_s"], reused["cpu_s"]),
                        extra={"faults_per_step_default": default["faults"],
                               "faults_per_step_reused": reused["faults"]})]

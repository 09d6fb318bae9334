"""(k) The sweep runner: jobs per CPU-hour and per hour of wall time, against two serial single-thread jobs.

The same two-seed multirun (the paper's protocol on the shipped tiny pair, shortened: fewer steps and
test points, so that a job takes tens of seconds) is run three ways, each from an empty cache:

- ``docs/sweep.sh`` as shipped: one single-thread job per core, side by side (``JOBS`` = cores);
- the two jobs one after the other, each on one thread (``JOBS=1`` on a one-thread budget);
- the two jobs one after the other on every core (``JOBS=1``): how the sweeps ran before the runner.

CPU time is the user + system time of the whole process tree. On a machine other jobs share, wall time
(and so jobs per hour) says more about them than about the runner; the table says the load when measured.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, Settings
from benchmarks.result import Measurement

SHORT = ["experiment=paper_protocol_tiny", "seed=0,1", "finetune.steps=60", "align.steps=40",
         "align.val_check_interval=20", "evaluation.task_points=200", "evaluation.language.n_texts=16",
         "evaluation.language.kl_texts=16", "logger=none"]
SMOKE = ["debug=smoke", "seed=0,1", "logger=none"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sweep(jobs: int, threads_budget: int | None, overrides: list[str]) -> tuple[float, float]:
    """``(wall s, CPU s)`` of ``docs/sweep.sh`` with ``JOBS=jobs`` (and ``cores = threads_budget``) from an empty cache."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JOBS": str(jobs), "GRAFTING_CACHE_DIR": str(Path(tmp) / "cache"),
               "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRAFTING_PROGRESS": "0"}
        command = ["bash", str(ROOT / "docs" / "sweep.sh"), *overrides, f"hydra.sweep.dir={tmp}/runs"]
        if threads_budget is not None:  # pin the process tree to that many cores
            command = ["taskset", "-c", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:threads_budget]),
                       *command]
        cpu0, wall0 = _children_cpu(), time.perf_counter()
        subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - wall0, _children_cpu() - cpu0


def run(s: Settings) -> list[Measurement]:
    overrides = SMOKE if s.quick else SHORT
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    ways = {"runner: one single-thread job per core": (cores, None),
            "serial, one thread each": (1, 1),
            "serial, every core each": (1, None)}
    measured = {label: run_sweep(jobs, budget, overrides) for label, (jobs, budget) in ways.items()}
    base_wall, base_cpu = measured["serial, one thread each"]
    out = []
    for label, (wall, cpu) in measured.items():
        out.append(Measurement(
            "k", f"2 jobs of a shortened paper-protocol multirun, {label}", "jobs per CPU-hour", 2 * 3600 / cpu,
            "two serial single-thread jobs", 2 * 3600 / base_cpu, unit="jobs/CPU-h", ratio=base_cpu / cpu,
            extra={"jobs_per_wall_hour": 2 * 3600 / wall, "wall_ratio_vs_serial": base_wall / wall, "wall_s": wall,
                   "cpu_s": cpu, "cores": cores, "load_avg_1min_at_start": load}))
    return out

"""Score several models at once: one single-thread process per model slot, forked, instead of one process
whose ops each split over every core.

A tiny model's generation is a long run of short ops (a decode step of a 128-wide model is microseconds of
work per op), which threads cannot split well; separate models can run side by side. The workers are forked
(they inherit the models, the tokenizer and the probe: nothing is pickled but the scores) and run on one
thread each; a job with a budget of one thread (``OMP_NUM_THREADS=1``, as the sweep runner gives each job),
or one model to score, scores in its own process, also one thread per op: a score does not depend on the
job's thread count.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from grafting.threads import single_op_threads

_task: Callable[[Any], Any] | None = None  # what the forked workers run (inherited, never pickled)
_items: Sequence[Any] = ()


def _one_thread() -> None:
    torch.set_num_threads(1)


def _run(index: int) -> Any:
    assert _task is not None
    return _task(_items[index])


def workers_for(n_items: int, device: torch.device) -> int:
    """How many worker processes: the job's thread budget (``torch.get_num_threads()``), at most one per item;
    1 (in this process) on a GPU, without ``fork``, or inside a daemon process (a pool worker)."""
    if device.type != "cpu" or not hasattr(os, "fork") or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(n_items, torch.get_num_threads()))


def map_forked(task: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """``[task(x) for x in items]``, in ``workers`` forked single-thread processes when ``workers > 1``."""
    global _task, _items
    if workers <= 1 or len(items) <= 1:
        with single_op_threads():  # one thread per op here too: the scores do not depend on the path
            return [task(x) for x in items]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the Rust tokenizer's pool does not survive fork
    _task, _items = task, items
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_one_thread) as pool:
            return pool.map(_run, range(len(items)), chunksize=1)
    finally:
        _task, _items = None, ()

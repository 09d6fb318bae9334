"""Coarse-grained threads: independent pieces of one training step side by side, each op on one thread.

A tiny model's ops are too short to split across threads well, and threads that meet at every op wait for
each other whenever the machine is shared: a job on two busy cores ran many times slower on two threads
than on one. So a step that has independent work (the chunks of the logit-lens KL, the frozen forwards of
two models) runs those pieces on the job's threads, each piece single-threaded, and meets once per piece.
Every op then runs on one thread whatever the job's budget, so the numbers are the same bit for bit on any
number of cores (tests/test_threads.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_budget = threading.local()  # the budget inside single_op_threads(), per calling thread


@contextlib.contextmanager
def single_op_threads() -> Iterator[int]:
    """Every op inside runs on one thread; yields the thread budget to spread work over (``run_all``).

    The budget is the job's torch thread count on entry (``OMP_NUM_THREADS``, else the cores); nested in
    the same thread, the enclosing one's; in a pool thread, 1.
    """
    outer = getattr(_budget, "value", None)
    if outer is not None:  # nested in this thread: already one op-thread, the same budget
        yield outer
        return
    budget = torch.get_num_threads()  # 1 in a pool thread: its caller holds the budget
    if budget > 1:
        torch.set_num_threads(1)
    _budget.value = budget
    try:
        yield budget
    finally:
        _budget.value = outer
        if budget > 1:
            torch.set_num_threads(budget)


def budget() -> int:
    """The thread budget of the enclosing :func:`single_op_threads` (1 outside one)."""
    return getattr(_budget, "value", None) or 1


def _executor(helpers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < helpers:  # noqa: SLF001 (grow, never shrink)
            _pool = ThreadPoolExecutor(helpers, thread_name_prefix="grafting")
        return _pool


def run_all(tasks: Sequence[Callable[[], T]], workers: int | None = None) -> list[T]:
    """``[task() for task in tasks]`` on up to ``workers`` threads (default: :func:`budget`), results in order.

    The calling thread runs the first task and ``workers - 1`` pool threads the others. Each task runs with
    the caller's grad mode (it is per thread in torch). With one worker, or one task, everything runs here.
    """
    workers = min(len(tasks), budget() if workers is None else workers)
    if workers <= 1:
        return [task() for task in tasks]
    grad = torch.is_grad_enabled()

    def call(task: Callable[[], Any]) -> Any:
        with torch.set_grad_enabled(grad):
            return task()

    pool = _executor(workers - 1)
    futures = [pool.submit(call, task) for task in tasks[1:]]
    first = call(tasks[0])  # the caller works too
    return [first, *(f.result() for f in futures)]

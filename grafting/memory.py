"""Keep freed memory for reuse instead of handing it back to the OS after every training step.

glibc serves an allocation above its mmap threshold (128 KiB to start, raised as such blocks are freed) with a
fresh ``mmap`` and unmaps it on free, and trims the top of the heap once 128 KiB of it is free. A training
step allocates and frees the same few-MB tensors (a logit-lens chunk's logits, a batch's activations) every
step, so each step faults its memory in again: 3 million minor page faults in the main job, about a tenth
of its time (benchmarks/RESULTS.md). With blocks up to 32 MiB taken from the heap and the heap kept, freed
memory is reused. No number changes; the process keeps its peak memory instead of returning it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for this setting on 64-bit
TRIM_THRESHOLD = 1 << 30


def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (and the processes it forks); True when applied.

    A no-op returning False without glibc (macOS, Windows, musl) or with ``GRAFTING_KEEP_MALLOC=1``.
    """
    if os.environ.get("GRAFTING_KEEP_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it: mallopt's parameters are glibc's)
    except (OSError, AttributeError):
        return False
    # the mmap threshold first: setting either one turns off glibc's dynamic raising of the other
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))

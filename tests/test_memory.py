"""grafting.memory: freed tensors are reused instead of page-faulted in again (glibc only)."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from grafting.memory import reuse_freed_memory

CHILD = """
import resource, torch
from grafting.memory import reuse_freed_memory
applied = reuse_freed_memory()
def step():  # a training step's tensors of 4 to 20 MB, alive together, then freed
    kept = [torch.ones(n) for n in (1 << 20, 3 << 20, 1 << 21, 5 << 20)]
    for t in kept[::-1]:
        t.sum()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: bool) -> tuple[bool, int]:
    env = {**os.environ, "GRAFTING_KEEP_MALLOC": "1" if keep else "0"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(sys.platform != "linux" or "libc" not in (ctypes.util.find_library("c") or ""),
                    reason="glibc's mallopt")
def test_freed_tensors_are_reused_not_faulted_in_again():
    applied_default, default = _faults(keep=True)
    applied, reused = _faults(keep=False)
    assert not applied_default and applied
    touched = 20 * 2816  # 20 steps of 11 MiB: the pages a step writes
    assert default > touched // 5  # glibc's defaults: much of each step's memory is faulted in again
    assert reused < min(default, touched // 10)  # reused: at most a tenth of it


def test_the_opt_out_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv("GRAFTING_KEEP_MALLOC", "1")
    assert reuse_freed_memory() is False

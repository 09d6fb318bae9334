"""What every benchmark needs: the machine's name, timers, peak memory, real-sized random models, batches.

Timings are the median of ``repeats`` runs after a warm-up. Peak memory is ``torch.cuda.max_memory_allocated``
on a GPU; on CPU it is the process's resident set size, sampled every millisecond by a thread (an
estimate, exact to the sampling interval), minus the size before the measured call (after handing
freed heap pages back to the OS, so that reused memory counts too).
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Settings:
    """Sizes of one benchmark run: ``full`` uses the real Pythia shapes, ``quick`` tiny ones (for tests)."""

    quick: bool
    device: torch.device

    @property
    def small_model(self) -> str:
        return "tiny-random" if self.quick else "pythia-70m-random"

    @property
    def large_model(self) -> str:
        return "tiny-random" if self.quick else "pythia-160m-random"

    @property
    def repeats(self) -> int:
        return 2 if self.quick else 3


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _return_freed_memory() -> None:
    """glibc keeps freed heap pages; ``malloc_trim`` hands them back to the OS (a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int, Any]:
    """``(peak bytes above the starting point while fn runs, fn's result)``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start, result
    _return_freed_memory()  # so that memory the step allocates shows up as growth of the RSS
    start = _rss_bytes()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], _rss_bytes()) - start, result


def model_spec(name: str) -> dict[str, Any]:
    """A shipped model preset (``grafting/presets/models``) as a plain dict."""
    from grafting.api import model_spec as preset

    return preset(name)


def random_model(name: str, device: torch.device, seed: int | None = None) -> torch.nn.Module:
    """The preset's architecture with seeded random weights (no download), in eval mode on ``device``."""
    from grafting.models.loading import build_random

    spec = model_spec(name)
    return build_random(spec["arch"], int(spec.get("seed", 0) if seed is None else seed)).to(device).eval()


def random_batch(model: torch.nn.Module, batch: int, seq: int, device: torch.device, seed: int = 0,
                 vocab: int = 4096) -> dict[str, torch.Tensor]:
    """Token ids below ``vocab`` (the built-in tokenizer's size), all positions attended, labels = ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(vocab, model.config.vocab_size), (batch, seq), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": ids.clone().to(device)}


def ratio(slow: float, fast: float) -> float:
    return slow / fast if fast > 0 else float("inf")


def prompts(n: int, tokens: int, tokenizer) -> list[str]:
    """``n`` prompts of about ``tokens`` tokens each, cut from the built-in corpus (as the language probe does)."""
    from grafting.data.corpus import builtin_documents

    out = []
    for doc in builtin_documents():
        ids = tokenizer(doc)["input_ids"]
        if len(ids) > tokens:
            out.append(tokenizer.decode(ids[:tokens]))
        if len(out) == n:
            return out
    raise RuntimeError(f"the built-in corpus has fewer than {n} documents of more than {tokens} tokens")


def causal_tokenizer():
    """The built-in BPE tokenizer (4096 tokens, trained locally once and cached)."""
    from grafting.models.tokenizer import builtin_tokenizer

    return builtin_tokenizer(4096)

"""(e) SkillPack compression and decompression of a pythia-160m-sized delta: time, peak memory, bytes.

The delta has the shapes of every weight of pythia-160m: a rank-16 signal plus small dense noise, the
shape of a fine-tuning delta. Two variants of the shipped ``graftllm`` policy are compared: exact SVD
everywhere, and randomized SVD (``torch.svd_lowrank``) for the fixed-rank modules (attention, lm_head),
where only the top ``rank`` directions are needed. Energy-threshold SVD (MLP) needs the whole spectrum,
so it stays exact in both.
"""

from __future__ import annotations

import copy

import torch
from omegaconf import OmegaConf

from benchmarks.common import ROOT, Settings, peak_memory, random_model, ratio
from benchmarks.result import Measurement
from grafting.skillpack.policy import compress_delta, decompress_state

MiB = 2**20


def synthetic_delta(model: torch.nn.Module, rank: int = 16, noise: float = 1e-4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    delta = {}
    for name, p in model.state_dict().items():
        if p.dim() == 2:
            u = torch.randn(p.shape[0], rank, generator=g) / rank**0.5
            v = torch.randn(rank, p.shape[1], generator=g) * 1e-2
            delta[name] = u @ v + noise * torch.randn(p.shape, generator=g)
        else:
            delta[name] = noise * torch.randn(p.shape, generator=g)
    return delta


def policies() -> dict[str, dict]:
    exact = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "skillpack" / "default.yaml"))["methods"]["graftllm"]
    randomized = copy.deepcopy(exact)
    for kind in ("attention", "lm_head"):  # fixed rank: the top directions are all that is kept
        randomized[kind]["randomized"] = True
    return {"exact SVD": exact, "randomized SVD (fixed-rank modules)": randomized}


def relative_error(delta: dict, restored: dict) -> float:
    num = sum(float((delta[k] - restored[k].to(delta[k].dtype)).pow(2).sum()) for k in delta)
    return (num / sum(float(v.pow(2).sum()) for v in delta.values())) ** 0.5


def run(s: Settings) -> list[Measurement]:
    import time

    model = random_model(s.large_model, torch.device("cpu"))
    delta = synthetic_delta(model)
    del model
    dense_bytes = sum(v.numel() * v.element_size() for v in delta.values())
    out, seconds = [], {}
    for label, policy in policies().items():
        start = time.perf_counter()
        mem_c, packed = peak_memory(lambda policy=policy: compress_delta(delta, policy), torch.device("cpu"))
        seconds[label] = time.perf_counter() - start
        start = time.perf_counter()
        mem_d, restored = peak_memory(lambda packed=packed: decompress_state(packed), torch.device("cpu"))
        t_decompress = time.perf_counter() - start
        pack_bytes = sum(c.nbytes for c in packed.values())
        out.append(Measurement(
            "e", f"graftllm policy, {label}: compress a {s.large_model}-sized delta "
                 f"({dense_bytes / MiB:.0f} MiB dense)", "compress", seconds[label], "decompress", t_decompress,
            extra={"compress_peak_MiB": mem_c / MiB, "decompress_peak_MiB": mem_d / MiB,
                   "pack_MiB": pack_bytes / MiB, "fraction_of_dense_bytes": pack_bytes / dense_bytes,
                   "relative_error": relative_error(delta, restored)}))
    exact, fast = seconds.values()
    out.append(Measurement("e", "compression time, randomized against exact SVD", "randomized", fast,
                           "exact", exact, ratio=ratio(exact, fast)))
    return out

"""(m) Serving SkillPacks: the cost of applying and unloading a pack, and of routing a mixed batch of prompts
to their packs, against the base model alone and against all packs merged into the weights once.

Three packs on the attention and MLP weights (low-rank deltas of the size a skill's fine-tune leaves), each
compressed with the default ``graftllm`` policy (SVD factors, mixed precision), so applying one includes its
decompression. Routing uses ``centroid`` (no training), fitted on each pack's own prompts.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from benchmarks.common import Settings, causal_tokenizer, median_time, prompts, random_model, ratio
from benchmarks.result import Measurement
from grafting.generation import generate_continuations
from grafting.skillpack.apply import applied
from grafting.skillpack.pack import SkillPack, model_fingerprint
from grafting.skillpack.policy import compress_delta
from grafting.skillpack.routers import build_router, routed_generate

ROOT_CONF = __file__.rsplit("/benchmarks/", 1)[0] + "/conf/skillpack/default.yaml"


def _pack(model: torch.nn.Module, seed: int, fingerprint: str, policy: dict) -> SkillPack:
    """A rank-8 delta of relative size 1e-2 on every attention and MLP weight matrix, compressed with ``policy``."""
    g = torch.Generator().manual_seed(seed)
    delta = {}
    for name, p in model.named_parameters():
        if p.ndim == 2 and (".attention." in name or ".mlp." in name):
            u = torch.randn(p.shape[0], 8, generator=g)
            v = torch.randn(8, p.shape[1], generator=g)
            delta[name] = 1e-2 * p.detach().norm() * (u @ v) / (u @ v).norm()
    return SkillPack(compress_delta(delta, policy), fingerprint)


def run(s: Settings) -> list[Measurement]:
    model = random_model(s.small_model, s.device)
    tokenizer = causal_tokenizer()
    fingerprint = model_fingerprint(model)
    policy = OmegaConf.to_container(OmegaConf.load(ROOT_CONF).methods.graftllm)
    packs = {f"skill{i}": _pack(model, i, fingerprint, policy) for i in range(3)}
    n, new = (6, 4) if s.quick else (24, 16)
    texts = prompts(n, 24, tokenizer)
    by_pack = {name: texts[i::3] for i, name in enumerate(packs)}  # the mixed stream: every third prompt a skill
    router = build_router("centroid", list(packs))
    router.fit(model, tokenizer, packs, by_pack, fingerprint=fingerprint)
    gen = {"max_new_tokens": new, "min_new_tokens": new}

    def apply_unload():
        with applied(model, packs["skill0"], fingerprint=fingerprint):
            pass

    def base():
        generate_continuations(model, tokenizer, texts, batch_size=n, **gen)

    def merged():  # all packs summed into the weights once: one batch, no routing (task arithmetic, lam 1)
        with applied(model, list(packs.values()), fingerprint=fingerprint):
            generate_continuations(model, tokenizer, texts, batch_size=n, **gen)

    def routed_batch():
        routed_generate(model, tokenizer, router, packs, texts, gen["max_new_tokens"], batch_size=n,
                        fingerprint=fingerprint)

    def routed_one_by_one():
        for text in texts:
            routed_generate(model, tokenizer, router, packs, [text], gen["max_new_tokens"], fingerprint=fingerprint)

    t_apply = median_time(apply_unload, s.device, s.repeats)
    t_base = median_time(base, s.device, s.repeats)
    t_merged = median_time(merged, s.device, s.repeats)
    t_routed = median_time(routed_batch, s.device, s.repeats)
    t_single = median_time(routed_one_by_one, s.device, 1, warmup=0)
    what = f"{n} mixed prompts of 3 skills, {new} new tokens, {s.small_model}, graftllm packs"
    return [
        Measurement("m", f"apply + unload one graftllm pack (decompress, add, restore), {s.small_model}",
                    "apply + unload", t_apply, "generate the batch on the base", t_base, ratio=ratio(t_base, t_apply),
                    extra={"pack_bytes": packs["skill0"].nbytes}),
        Measurement("m", what, "routed (centroid), prompts grouped by pack", t_routed, "base model alone", t_base,
                    ratio=ratio(t_routed, t_base), higher_is_better=False,
                    extra={"note": "ratio = routed / base: the price of routing"}),
        Measurement("m", what, "routed (centroid), prompts grouped by pack", t_routed, "all packs merged once",
                    t_merged, ratio=ratio(t_routed, t_merged), higher_is_better=False),
        Measurement("m", what, "routed, grouped by pack", t_routed, "routed one prompt at a time", t_single,
                    ratio=ratio(t_single, t_routed)),
    ]

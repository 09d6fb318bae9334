"""SkillPack LoRA baseline and transplant KL (issue 26, items 4 and 5): the fast paths against the ones they replace.

- LoRA: one step of each of five adapters (the budget curve's ranks 4/8/13/22/44 at one rate) trained
  in one pass with the LM head only at the answer tokens (``MultiLoraModel``), against five separate
  peft steps through the model's own full-vocabulary loss. Per adapter-step time.
- LoRA side by side: the budget pass's three adapters and the learning-rate pass's two, 100 steps with the
  job's thread budget, one forked single-thread pass per group (``train_adapters_side_by_side``'s layout)
  against one pass of all of them on every thread, and on one thread (the layout before).
- Transplant KL: one condition's KL(target ‖ transplanted) on 64 texts x 64 tokens with the target's
  side captured once (``KLReference``), against ``mean_kl`` (both models every time, five positions x
  vocabulary tensors per batch).

Case (l) of ``python -m benchmarks``.
"""

from __future__ import annotations

import copy
import time

import torch

from benchmarks.common import Settings, median_time, ratio
from benchmarks.result import Measurement
from grafting import surgery
from grafting.evaluation.parallel import map_forked
from grafting.models.loading import build_random
from grafting.modules.skillpack_train import SkillPackTrainModule
from grafting.skillpack.multi_lora import AdapterSpec, MultiLoraModel
from grafting.stages.skillpack_budgets import adapter_groups

RANKS = (4, 8, 13, 22, 44)


def _arch(quick: bool, family: str) -> dict:
    if family == "gpt_neox":  # the SkillPack target (tiny-host's shape)
        return dict(model_type="gpt_neox", hidden_size=64 if quick else 128, num_hidden_layers=2 if quick else 4,
                    num_attention_heads=4, intermediate_size=256 if quick else 512, vocab_size=4096,
                    max_position_embeddings=256, rotary_pct=0.25, use_parallel_residual=True)
    return dict(model_type="llama", hidden_size=64, num_hidden_layers=2 if quick else 10, num_attention_heads=2,
                num_key_value_heads=2, intermediate_size=128, vocab_size=4096, max_position_embeddings=128,
                tie_word_embeddings=True)  # the transplant pair's shape


def _lora_setup(s: Settings, device: torch.device) -> tuple[torch.nn.Module, dict, list[str]]:
    """The SkillPack target's shape, one SFT batch (a 12-token prompt, a 4-token answer: the budget job's
    shape) and the LoRA target modules."""
    model = build_random(_arch(s.quick, "gpt_neox"), 0).to(device)
    ids = torch.randint(0, 4096, (32, 16), generator=torch.Generator().manual_seed(0)).to(device)
    labels = ids.clone()
    labels[:, :12] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return model, batch, surgery.architecture(model).lora_targets


def _lora(s: Settings) -> Measurement:
    model, batch, targets = _lora_setup(s, s.device)
    multi = MultiLoraModel(model, targets, [AdapterSpec(r, 2 * r, 3e-3) for r in RANKS],
                           lambda: torch.manual_seed(0)).to(s.device)
    opt = torch.optim.AdamW(multi.param_groups(), weight_decay=0.0)
    singles = [SkillPackTrainModule(model, method="lora", lora_r=r, lora_alpha=2 * r).to(s.device) for r in RANKS]
    opts = [torch.optim.AdamW([p for p in m.model.parameters() if p.requires_grad], lr=3e-3) for m in singles]

    def fast() -> None:
        multi.losses(batch).sum().backward()
        opt.step()
        opt.zero_grad()

    def simple() -> None:
        for module, o in zip(singles, opts, strict=True):
            module(batch).backward()
            o.step()
            o.zero_grad()

    t_fast = median_time(fast, s.device, s.repeats) / len(RANKS)
    t_simple = median_time(simple, s.device, s.repeats) / len(RANKS)
    return Measurement("l", f"SkillPack LoRA step per adapter, {len(RANKS)} ranks, batch 32 x 16 tokens",
                       "adapters in one pass, LM head at answer tokens", t_fast,
                       "separate peft steps, full-vocabulary loss", t_simple, ratio=ratio(t_simple, t_fast))


def _lora_side_by_side(s: Settings) -> list[Measurement]:
    """The budget pass (3 adapters) and the learning-rate pass (2): side by side against one pass on every
    thread, with one pass on one thread (the layout before) beside them. Training loops only (the fork and
    the model copies take well under a second, against minutes for a real pass of 1500 steps)."""
    model, batch, targets = _lora_setup(s, torch.device("cpu"))  # forked workers: a CPU layout
    steps, budget = 3 if s.quick else 100, torch.get_num_threads()

    def train(group: list[int] | tuple[int, ...]) -> float:
        multi = MultiLoraModel(model, targets, [AdapterSpec(r, 2 * r, 3e-3) for r in group], lambda: torch.manual_seed(0))
        opt = torch.optim.AdamW(multi.param_groups(), weight_decay=0.0)
        start = time.perf_counter()
        for _ in range(steps):
            multi.losses(batch).sum().backward()
            opt.step()
            opt.zero_grad()
        return time.perf_counter() - start

    out = []
    for name, ranks in (("budget pass", RANKS[1:4]), ("learning-rate pass", RANKS[2:4])):
        groups = adapter_groups(list(ranks), budget)  # the job's own layout
        t_fast = max(map_forked(train, groups, len(groups)))  # the pass ends with its slowest group
        t_simple = train(ranks)  # one pass on the job's threads
        torch.set_num_threads(1)
        t_one = train(ranks)  # one pass, one thread
        torch.set_num_threads(budget)
        out.append(Measurement("l", f"SkillPack LoRA {name}, {len(ranks)} adapters x {steps} steps, {budget} threads",
                               f"{len(groups)} forked single-thread passes side by side", t_fast,
                               "one pass of every adapter on every thread", t_simple,
                               ratio=ratio(t_simple, t_fast),
                               extra={"one_pass_one_thread_s": round(t_one, 3),
                                      "speedup_vs_one_thread": round(t_one / t_fast, 2)}))
    return out


def _transplant_kl(s: Settings) -> Measurement:
    from grafting.stages.transplant import mean_kl
    from grafting.transplant import candidate_modules, transplant_
    from grafting.transplant.shared import KLReference

    target = build_random(_arch(s.quick, "llama"), 0).to(s.device).eval()
    source = build_random(_arch(s.quick, "llama"), 1).to(s.device).eval()
    reference = copy.deepcopy(target)
    transplant_(target, source, candidate_modules(source, target)[:8])
    texts = 16 if s.quick else 64
    chunks = torch.randint(0, 4096, (texts, 64), generator=torch.Generator().manual_seed(0)).to(s.device)
    shared = KLReference.capture(reference, chunks, 32)
    t_fast = median_time(lambda: shared.kl(target), s.device, s.repeats)
    t_simple = median_time(lambda: mean_kl(reference, target, chunks, 32), s.device, s.repeats)
    difference = abs(shared.kl(target)[0] - mean_kl(reference, target, chunks, 32))
    # texts per forward: fewer, larger forwards cost less Python per token, until a tensor leaves the heap
    other_sub_batches = {}
    for n in (8, 32):
        other = KLReference.capture(reference, chunks, 32, n)
        other_sub_batches[f"sub_batch_{n}_s"] = round(median_time(lambda o=other: o.kl(target), s.device, s.repeats), 4)
    return Measurement("l", f"transplant condition's KL, {texts} texts x 64 tokens, 4096 vocabulary",
                       f"target side captured once, fused KL, {shared.sub_batch} texts per forward", t_fast,
                       "mean_kl (both models each time)", t_simple, ratio=ratio(t_simple, t_fast),
                       extra={"abs_kl_difference": difference, **other_sub_batches})


def run(s: Settings) -> list[Measurement]:
    with torch.no_grad():
        kl = _transplant_kl(s)
    return [_lora(s), *_lora_side_by_side(s), kl]

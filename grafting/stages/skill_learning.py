"""Learning a skill the GraftLLM way, shared by the SkillPack stages.

1. ``train_source``: full SFT of the source (``donor``) on the task's true answers.
2. ``distill``: the tuned source answers *other* training prompts; only this text crosses over,
   so source and target may differ in width, depth or tokenizer. For DPO the base target's own
   answers are the rejected side.
3. ``train_target``: SFT (+ optional DPO) of the target (``host``) on the distilled pairs with
   :class:`SkillPackTrainModule`, by full fine-tuning (the SkillPack delta) or LoRA (the baseline).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from grafting import surgery
from grafting.artifacts import write_json_atomic
from grafting.data.datasets import TaskSFTDataset, pad_collate
from grafting.data.preference import PreferenceDataset, preference_collate
from grafting.data.skill_tasks import SkillExample, SkillTask
from grafting.evaluation.skill_eval import evaluate_skill, strip_outputs
from grafting.generation import generate_continuations
from grafting.modules.causal_lm import CausalLMModule
from grafting.modules.skillpack_train import SkillPackTrainModule
from grafting.run_context import RunContext
from grafting.skillpack.delta import compute_delta
from grafting.skillpack.multi_lora import AdapterSpec, MultiLoraModel
from grafting.skillpack.multi_lora_train import MultiLoraTrainModule

log = logging.getLogger(__name__)


@dataclass
class Distilled:
    """The text that crosses from source to target for one task."""

    task: str
    prompts: list[str]
    responses: list[str]
    rejected: list[str] | None = None
    source_scores: dict[str, Any] = field(default_factory=dict)


def _loader(dataset, collate, batch_size: int, seed: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen, collate_fn=collate,
                      drop_last=len(dataset) > batch_size)


def _fit(ctx: RunContext, module, loader: DataLoader, stage: str, steps: int) -> None:
    """Trains with the job's Trainer; ``resume=true`` continues from ``checkpoints/<stage>/last.ckpt``."""
    last = ctx.checkpoint_dir(stage) / "last.ckpt"
    ckpt_path = str(last) if ctx.cfg.get("resume", False) and last.is_file() else None
    ctx.trainer(max_steps=steps, stage=stage, limit_val_batches=0).fit(
        module, train_dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)


def train_source(ctx: RunContext, source: nn.Module, tokenizer, task: SkillTask) -> nn.Module:
    """A copy of ``source`` fully fine-tuned on the first ``skill.source_sft.n_train`` true examples, on
    ``source``'s device."""
    sk, opt = ctx.cfg.skill, ctx.cfg.skill.source_sft
    examples = task.split("train")[: int(opt.n_train)]
    data = TaskSFTDataset(examples, tokenizer, int(sk.max_length))
    ctx.reseed()
    module = CausalLMModule(copy.deepcopy(source).float().train(), lr=float(opt.lr), weight_decay=0.0,
                            warmup_steps=int(opt.warmup_steps), max_steps=int(opt.steps))
    loader = _loader(data, pad_collate(tokenizer.pad_token_id), int(opt.batch_size), int(ctx.cfg.seed))
    _fit(ctx, module, loader, f"source_{task.name}", int(opt.steps))
    # Lightning leaves the trained copy on the CPU; it generates where the source lives
    return module.model.to(next(source.parameters()).device).requires_grad_(False).eval()


def distill(ctx: RunContext, task: SkillTask, source: nn.Module, source_tokenizer, target: nn.Module,
            target_tokenizer) -> Distilled:
    """The tuned source's greedy answers to ``skill.n_train`` training prompts it never trained on."""
    sk = ctx.cfg.skill
    start = int(sk.source_sft.n_train)
    prompts = [ex.prompt for ex in task.split("train")[start : start + int(sk.n_train)]]
    if not prompts:
        raise ValueError(f"task {task.name!r} has no training prompts left after the source's {start}")
    gen = dict(max_new_tokens=int(sk.max_new_tokens), batch_size=int(sk.gen_batch_size))
    responses = generate_continuations(source, source_tokenizer, prompts, **gen)
    rejected = generate_continuations(target, target_tokenizer, prompts, **gen) if sk.dpo.enabled else None
    scores = evaluate_skill(source, source_tokenizer, task, int(sk.n_test), **gen)
    log.info("source on %s: %s", task.name, {k: v for k, v in scores.items() if k not in ("samples", "outputs")})
    data = Distilled(task.name, prompts, responses, rejected, strip_outputs(scores))
    # what crossed from source to target, kept with the run (text only)
    write_json_atomic(ctx.run_dir / "distilled" / f"{task.name}.json", asdict(data))
    return data


def train_target(ctx: RunContext, target: nn.Module, tokenizer, data: Distilled, method: str = "full",
                 lora_r: int = 8, lora_alpha: int | None = None, lr: float | None = None,
                 steps: int | None = None, phase: str = "target") -> SkillPackTrainModule:
    """SFT (+ DPO if ``skill.dpo.enabled``) of a copy of ``target`` on the distilled pairs.

    ``lr`` and ``steps`` default to ``skill.target_sft``'s (the LoRA baseline may set its own);
    ``phase`` names the checkpoint folder ``<phase>_<task>``.
    """
    sk, opt = ctx.cfg.skill, ctx.cfg.skill.target_sft
    steps = int(steps if steps is not None else opt.steps)
    pad = tokenizer.pad_token_id
    if sk.dpo.enabled:
        if data.rejected is None:
            raise ValueError("skill.dpo.enabled needs rejected responses; distill with DPO on")
        dataset = PreferenceDataset(data.prompts, data.responses, data.rejected, tokenizer, int(sk.max_length))
        collate = preference_collate(pad)
    else:
        dataset, collate = sft_dataset(ctx, tokenizer, data)
    ctx.reseed()
    module = SkillPackTrainModule(
        target, method=method, lr=float(lr if lr is not None else opt.lr), weight_decay=float(opt.weight_decay),
        warmup_steps=int(opt.warmup_steps), max_steps=steps, lora_r=lora_r,
        lora_alpha=int(lora_alpha if lora_alpha is not None else 2 * lora_r),
        dpo_weight=float(sk.dpo.weight) if sk.dpo.enabled else 0.0, dpo_beta=float(sk.dpo.beta))
    loader = _loader(dataset, collate, int(opt.batch_size), int(ctx.cfg.seed))
    _fit(ctx, module, loader, f"{phase}_{data.task}", steps)
    return module


def sft_dataset(ctx: RunContext, tokenizer, data: Distilled) -> tuple[TaskSFTDataset, Any]:
    """The distilled pairs as an SFT dataset (loss on the answer) and its collate function."""
    examples = [SkillExample(p, r, None) for p, r in zip(data.prompts, data.responses, strict=True)]
    return TaskSFTDataset(examples, tokenizer, int(ctx.cfg.skill.max_length)), pad_collate(tokenizer.pad_token_id)


def train_lora_adapters(ctx: RunContext, target: nn.Module, tokenizer, data: Distilled, specs: list[AdapterSpec],
                        steps: int, phase: str) -> MultiLoraModel:
    """LoRA SFT of ``target`` on the distilled pairs, one adapter per spec, in one pass over the data.

    Each adapter equals what ``train_target(..., method="lora", lora_r=spec.rank, lora_alpha=spec.alpha,
    lr=spec.lr, steps=steps)`` trains on its own (same initialisation, batches and schedule), to float
    tolerance (``tests/test_skillpack_multi_lora.py``). SFT only: DPO keeps the one-adapter path.
    """
    opt = ctx.cfg.skill.target_sft
    dataset, collate = sft_dataset(ctx, tokenizer, data)
    model = MultiLoraModel(target, surgery.architecture(target).lora_targets, specs, ctx.reseed)
    module = MultiLoraTrainModule(model, weight_decay=float(opt.weight_decay), warmup_steps=int(opt.warmup_steps),
                                  max_steps=steps)
    loader = _loader(dataset, collate, int(opt.batch_size), int(ctx.cfg.seed))
    _fit(ctx, module, loader, f"{phase}_{data.task}", steps)
    return model.eval()


def skill_delta(module: SkillPackTrainModule) -> dict[str, torch.Tensor]:
    """``θ* − θ`` (float32, CPU) for every weight the full fine-tune changed: what a SkillPack compresses."""
    if module.method != "full":
        raise ValueError("a skill delta needs method='full'; use grafting.skillpack.lora.lora_pack for LoRA")
    return compute_delta(module.base_state, {k: v.detach().cpu() for k, v in module.model.state_dict().items()})


def learn_skill(ctx: RunContext, task: SkillTask, source: nn.Module, source_tokenizer, target: nn.Module,
                tokenizer) -> tuple[Distilled, SkillPackTrainModule]:
    """Source SFT -> distillation -> full fine-tuning of the target; returns the data and the trained module."""
    tuned_source = train_source(ctx, source, source_tokenizer, task)
    data = distill(ctx, task, tuned_source, source_tokenizer, target, tokenizer)
    del tuned_source
    return data, train_target(ctx, target, tokenizer, data)

"""Several LoRA adapters trained in one pass over the data: the equal-budget baseline's ranks and rates.

The LoRA baseline of the budget curves trains one adapter per (rank, learning rate) on the same batches
in the same order. :class:`MultiLoraModel` holds ``G`` adapters on one frozen copy of the base model:
every adapted ``nn.Linear`` computes the base projection once for the whole batch and adds adapter
``g``'s ``B_g A_g x · scaling_g`` to the ``g``-th copy of the batch. The batch is repeated ``G`` times,
so each adapter sees exactly the activations, loss and gradient of its own separate run; its
parameters are its own, so AdamW (elementwise) with one parameter group per adapter updates each as a
separate optimiser would. Each adapter starts from the initialisation peft gives a separate run after
the same reseed (:func:`peft_init`), so the adapters equal separate peft runs to float tolerance
(``tests/test_skillpack_multi_lora.py``).

:func:`labelled_logits_loss` computes the LM head and the cross-entropy only at the positions that
carry a label (the answer tokens), where peft's path projects every position onto the vocabulary and
discards most of them: the same loss, a fraction of the head's work.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import Tensor, nn

from grafting.data.datasets import IGNORE
from grafting.skillpack.compressors import CompressedTensor
from grafting.skillpack.lora import _meta
from grafting.skillpack.quant import resolve_dtype


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter of a :class:`MultiLoraModel`: its rank, ``lora_alpha`` and learning rate."""

    rank: int
    alpha: float
    lr: float

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank  # peft's scaling without rslora


class MultiLoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``G`` LoRA adapters, adapter ``g`` applied to the ``g``-th batch chunk."""

    def __init__(self, base: nn.Linear, specs: Sequence[AdapterSpec], inits: Sequence[tuple[Tensor, Tensor]]):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scaling = [s.scaling for s in specs]
        # peft's layout: lora_A (r x in), lora_B (out x r)
        self.lora_A = nn.ParameterList([nn.Parameter(a.detach().clone().float()) for a, _ in inits])
        self.lora_B = nn.ParameterList([nn.Parameter(b.detach().clone().float()) for _, b in inits])

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        chunks = x.chunk(len(self.scaling), dim=0)
        # the same ops in the same order as peft's ``result + lora_B(lora_A(x)) * scaling``
        delta = [F.linear(F.linear(xg, a), b) * s
                 for xg, a, b, s in zip(chunks, self.lora_A, self.lora_B, self.scaling, strict=True)]
        return out + torch.cat(delta, dim=0)


def peft_init(model: nn.Module, targets: Sequence[str], rank: int, alpha: float,
              reseed: Callable[[], None]) -> dict[str, tuple[Tensor, Tensor]]:
    """The ``(A, B)`` peft draws for a rank-``rank`` LoRA on ``targets`` right after ``reseed()``, per module.

    A separate run reseeds and then builds its peft model; doing the same here gives each adapter of a
    :class:`MultiLoraModel` the exact initialisation of its separate run.
    """
    reseed()
    peft = get_peft_model(copy.deepcopy(model).float(),
                          LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets)))
    out = {}
    for path, module in peft.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            name = path.removeprefix("base_model.model.")
            out[name] = (module.lora_A["default"].weight.detach().clone(),
                         module.lora_B["default"].weight.detach().clone())
    return out


class MultiLoraModel(nn.Module):
    """A frozen float32 copy of ``model`` whose ``targets`` linears carry one adapter per spec.

    Args:
        model: the base causal LM (never modified).
        targets: leaf names of the linears to adapt (``surgery.architecture(model).lora_targets``).
        specs: one :class:`AdapterSpec` per adapter.
        reseed: restores the job's RNG state, called before each adapter's initialisation.
    """

    def __init__(self, model: nn.Module, targets: Sequence[str], specs: Sequence[AdapterSpec],
                 reseed: Callable[[], None]):
        super().__init__()
        if not specs:
            raise ValueError("MultiLoraModel needs at least one adapter")
        self.specs = list(specs)
        inits = [peft_init(model, targets, s.rank, s.alpha, reseed) for s in self.specs]
        self.model = copy.deepcopy(model).float().requires_grad_(False)
        mods = dict(self.model.named_modules())
        self.adapted: dict[str, MultiLoraLinear] = {}
        for name in inits[0]:
            parent_name, _, leaf = name.rpartition(".")
            base = mods[name]
            if type(base) is not nn.Linear:
                raise TypeError(f"{name} is a {type(base).__name__}; MultiLoraModel adapts nn.Linear only")
            layer = MultiLoraLinear(base, self.specs, [init[name] for init in inits])
            setattr(mods[parent_name] if parent_name else self.model, leaf, layer)
            self.adapted[name] = layer
        self.model.train()

    @property
    def n_adapters(self) -> int:
        return len(self.specs)

    def param_groups(self) -> list[dict]:
        """One AdamW parameter group per adapter, at its own learning rate."""
        return [{"params": [p for layer in self.adapted.values() for p in (layer.lora_A[g], layer.lora_B[g])],
                 "lr": spec.lr} for g, spec in enumerate(self.specs)]

    def losses(self, batch: dict[str, Tensor]) -> Tensor:
        """Per-adapter next-token loss on the answer tokens of ``batch`` (each adapter sees the whole batch)."""
        g = self.n_adapters
        return labelled_logits_loss(self.model, batch["input_ids"].repeat(g, 1),
                                    batch["attention_mask"].repeat(g, 1), batch["labels"].repeat(g, 1), groups=g)

    def pack(self, index: int, dtype: str = "float16") -> dict[str, CompressedTensor]:
        """Adapter ``index`` as ``lora`` entries, laid out as :func:`grafting.skillpack.lora.lora_pack` lays
        out a peft model's."""
        store = resolve_dtype(dtype)
        spec = self.specs[index]
        out = {}
        for name, layer in self.adapted.items():
            a = layer.lora_A[index].detach().float().cpu()
            b = layer.lora_B[index].detach().float().cpu()
            left, right = b * spec.scaling, a
            meta = _meta((left.shape[0], right.shape[1]), spec.rank, dtype, float(spec.alpha))
            out[name + ".weight"] = CompressedTensor({"A": left.to(store).contiguous(),
                                                     "B": right.to(store).contiguous()}, meta)
        return out


def labelled_logits_loss(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor,
                         groups: int = 1) -> Tensor:
    """Causal-LM cross-entropy with the LM head applied only where a label exists, one loss per row group.

    Equals ``model(input_ids, attention_mask, labels=labels).loss`` (the mean over labelled tokens) for
    ``groups=1``; with ``groups=G`` the rows are ``G`` equal chunks and the result holds each chunk's mean.
    """
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = hidden.last_hidden_state if hasattr(hidden, "last_hidden_state") else hidden[0]
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    per_token = F.cross_entropy(logits, target[keep], reduction="none")
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(keep)[keep]
    group = torch.div(rows, labels.shape[0] // groups, rounding_mode="floor")
    sums = torch.zeros(groups, dtype=per_token.dtype, device=per_token.device).index_add_(0, group, per_token)
    counts = torch.bincount(group, minlength=groups).clamp_min(1)
    return sums / counts

"""Activation analysis for transplantation: last-token mean |output| per module, and module scores.

Inputs must be LEFT-padded: the recorder reads position ``-1`` of every row, which is each row's last real
token only under left padding. During ``generate`` with a KV cache each decoding step's forward has length 1,
so the same hook sees every new token without special handling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from grafting import names
from grafting.names import registry
from grafting.transplant._inputs import BatchLike, accepts, eval_mode, forward_kwargs, iter_batches
from grafting.transplant.candidates import linear_modules

__all__ = [
    "SCORERS",
    "ActivationRecorder",
    "rank_modules",
    "record_activations",
    "register_scorer",
    "score_modules",
]


class ActivationRecorder:
    """Forward hooks that accumulate mean |output| over the hidden dim at the last token of each call.

    Only a ``(batch,)`` vector per call is kept (no activation tensors are stored). Each row of each forward
    call counts once, so the average is over inputs and, during generation, over decoding steps.

    Use as a context manager, or call :meth:`attach` / :meth:`detach` yourself::

        with ActivationRecorder(model) as rec:
            model(**batch)
        means = rec.means()

    Args:
        model: model to hook.
        names: modules to record; defaults to every leaf linear (see ``linear_modules``).
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | None = None) -> None:
        mods = dict(model.named_modules())
        names = list(names) if names is not None else list(linear_modules(model))
        unknown = [n for n in names if n not in mods]
        if unknown:
            raise ValueError(f"modules not found in model: {', '.join(unknown)}")
        self.model = model
        self.names = names
        self._modules = {n: mods[n] for n in names}
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = dict.fromkeys(names, 0)
        self._handles: list[RemovableHandle] = []

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            out = out[0] if isinstance(out, tuple) else out
            # (batch, seq, features) -> last position; an unbatched (seq, features) output is one row.
            last = out[:, -1, :] if out.dim() >= 3 else out[-1:, :]
            per_row = last.detach().float().abs().mean(dim=-1)
            # Sum on device (no host sync per call); float64 keeps long runs exact enough, except on MPS.
            acc_dtype = torch.float32 if per_row.device.type == "mps" else torch.float64
            s = per_row.to(acc_dtype).sum()
            self._sums[name] = self._sums[name] + s if name in self._sums else s
            self._counts[name] += per_row.numel()

        return hook

    def attach(self) -> ActivationRecorder:
        """Register the hooks (idempotent)."""
        if not self._handles:
            self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self._modules.items()]
        return self

    def detach(self) -> None:
        """Remove the hooks; accumulated numbers are kept."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def reset(self) -> None:
        """Forget accumulated sums and counts."""
        self._sums.clear()
        self._counts = dict.fromkeys(self.names, 0)

    def counts(self) -> dict[str, int]:
        """Number of (row, call) last-token samples seen per module."""
        return dict(self._counts)

    def means(self) -> dict[str, float]:
        """Average last-token mean |output| per module; ``nan`` for a module that never ran."""
        return {
            n: (self._sums[n].item() / self._counts[n]) if self._counts[n] else math.nan for n in self.names
        }

    def __enter__(self) -> ActivationRecorder:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()


@torch.no_grad()
def record_activations(
    model: nn.Module,
    inputs: Iterable[BatchLike] | BatchLike,
    *,
    names: Sequence[str] | None = None,
    tokenizer: Any = None,
    batch_size: int = 8,
    generate_steps: int = 0,
    generate_kwargs: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Run a workload through ``model`` and return last-token mean |output| per module.

    Args:
        model: a causal LM (or any module taking ``input_ids``/``attention_mask``).
        inputs: left-padded dict batches, ``input_ids`` tensors, or strings (need ``tokenizer``).
        names: modules to record; defaults to every leaf linear of ``model``.
        tokenizer: used for string inputs (left padding is enforced).
        batch_size: batch size for flat string inputs.
        generate_steps: 0 records one forward per batch (the prompt's last token). ``n > 0`` greedily
            generates ``n`` new tokens with the KV cache and records every forward: the prefill (whose last
            token yields the first new token) and the ``n - 1`` steps that feed back new tokens. Rows that
            hit EOS early keep being fed pad tokens by ``generate``; those steps are counted too.
        generate_kwargs: extra ``generate`` arguments (override the greedy defaults).

    Returns:
        ``{name: mean}`` in ``names`` order.
    """
    if generate_steps < 0:
        raise ValueError(f"generate_steps must be >= 0, got {generate_steps}")
    with eval_mode(model), ActivationRecorder(model, names) as rec:
        for batch in iter_batches(inputs, tokenizer, batch_size):
            kw = forward_kwargs(model, batch)
            if generate_steps == 0:
                if accepts(model, "use_cache"):
                    kw.setdefault("use_cache", False)  # a cache is pure overhead for one forward
                model(**kw)
                continue
            kw.pop("position_ids", None)  # generate derives positions from the mask itself
            gen: dict[str, Any] = {"max_new_tokens": generate_steps, "do_sample": False}
            cfg = getattr(model, "generation_config", None)
            pad = getattr(cfg, "pad_token_id", None)
            if pad is None:
                pad = getattr(cfg, "eos_token_id", None)
                pad = pad[0] if isinstance(pad, list) else pad
            gen["pad_token_id"] = pad if pad is not None else 0
            gen.update(generate_kwargs or {})
            model.generate(**kw, **gen)
    return rec.means()


ScoreFn = Callable[[float, float, float], float]


def _abs_diff(s: float, t: float, eps: float) -> float:
    return abs(s - t)


def _rel_diff(s: float, t: float, eps: float) -> float:
    # Relative to the target so that modules with small activations in the weak model are not drowned out.
    return abs(s - t) / (abs(t) + eps)


SCORERS: dict[str, ScoreFn] = registry(names.SCORERS, {"abs_diff": _abs_diff, "rel_diff": _rel_diff})


def register_scorer(name: str, fn: ScoreFn) -> None:
    """Add a score function ``fn(src, tgt, eps) -> score`` under ``name``."""
    if name in SCORERS:
        raise ValueError(f"scorer {name!r} already registered")
    SCORERS[name] = fn


def score_modules(
    src_acts: dict[str, float], tgt_acts: dict[str, float], method: str = "abs_diff", eps: float = 1e-8
) -> dict[str, float]:
    """Score each module by how differently it activates in source and target.

    Args:
        src_acts: ``record_activations`` output for the source model.
        tgt_acts: the same for the target model, over the same modules.
        method: a key of ``SCORERS`` ("abs_diff": |s - t|, "rel_diff": |s - t| / (|t| + eps)).
        eps: stabiliser for relative scores.

    Raises:
        ValueError: unknown method, or the two dicts cover different modules.
    """
    if method not in SCORERS:
        raise ValueError(f"unknown score method {method!r}; choose from {sorted(SCORERS)}")
    if set(src_acts) != set(tgt_acts):
        only_s, only_t = sorted(set(src_acts) - set(tgt_acts)), sorted(set(tgt_acts) - set(src_acts))
        raise ValueError(f"activation dicts differ: only in source {only_s}, only in target {only_t}")
    fn = SCORERS[method]
    return {n: fn(src_acts[n], tgt_acts[n], eps) for n in tgt_acts}


def rank_modules(scores: dict[str, float]) -> list[str]:
    """Module names by descending score; ties broken by name, ``nan`` scores last."""

    def key(n: str) -> tuple[bool, float, str]:
        v = scores[n]
        return (math.isnan(v), 0.0 if math.isnan(v) else -v, n)

    return sorted(scores, key=key)

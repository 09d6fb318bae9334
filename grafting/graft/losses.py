"""Alignment losses, chosen by name (``loss.distance``); a new one is one function plus one registry line.

Residual distances compare two residual streams ``(batch, seq, d)`` position by position. The
paper's "KL divergence between the two streams" ("how much information is lost when approximating
the reference distribution") does not say how a vector becomes a distribution: the default reading
(``loss.reading=logit_lens``) decodes both streams into next-token distributions through the
reference model's own final norm and unembedding; ``hidden`` takes a softmax over the hidden
dimension instead. Every distance averages over the non-pad positions given by ``mask``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from grafting import names, threads
from grafting.names import registry


def _masked_mean(per_position: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return per_position.mean()
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp_min(1.0)


def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return _masked_mean((pred.float() - target.float()).pow(2).mean(-1), mask)


def cosine(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return _masked_mean(1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1), mask)


class _KLToFixedTarget(torch.autograd.Function):
    """Per-position KL(softmax(target) || softmax(pred)) for a target that needs no gradient.

    Same value as the autograd formula, but the backward is the closed form ``softmax(pred) - p``
    instead of a chain through log_softmax, sub, mul and sum: 1.4x faster on the logit-lens reading's
    vocabulary-sized last dimension (benchmarks case h).
    """

    @staticmethod
    def forward(ctx, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(target, dim=-1)
        log_q = F.log_softmax(pred, dim=-1)
        p = log_p.exp()
        per_position = (p * (log_p - log_q)).sum(-1)
        ctx.save_for_backward(log_q, p)
        return per_position

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        log_q, p = ctx.saved_tensors
        return (log_q.exp() - p) * grad.unsqueeze(-1), None


def kl(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
       temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(target) || softmax(pred)) over the last dimension (hidden units or vocabulary)."""
    pred, target = pred.float(), target.float()
    if temperature != 1.0:
        pred, target = pred / temperature, target / temperature
    if not target.requires_grad:
        return _masked_mean(_KLToFixedTarget.apply(pred, target), mask)
    log_p = F.log_softmax(target, dim=-1)
    log_q = F.log_softmax(pred, dim=-1)
    return _masked_mean((log_p.exp() * (log_p - log_q)).sum(-1), mask)


class _LensKL(torch.autograd.Function):
    """Per-position KL(softmax(t W^T + b) || softmax(h W^T + b)), computed chunk by chunk of positions.

    For each chunk, one GEMM gives the logits of both streams; the KL and, when ``h`` needs a gradient,
    ``dKL/dh = (softmax(q) - p) W / T`` follow in the same pass. So no ``positions x vocabulary`` tensor
    ever exists, each chunk's logits stay in cache, and the backward only scales the kept ``dKL/dh``
    (``positions x d``): nothing is recomputed. The KL is ``sum p (z_p - z_q) + lse(z_q) - lse(z_p)``
    on max-shifted logits, which needs one exp per logit.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                temperature: float, chunk: int) -> torch.Tensor:
        need_grad = ctx.needs_input_grad[0]
        n_positions = hidden.shape[0]
        per_position = hidden.new_empty(n_positions)
        grad = torch.empty_like(hidden) if need_grad else None
        starts = list(range(0, n_positions, chunk))
        # chunks are independent: one group per thread of the budget (on a GPU one stream does them all)
        groups = max(1, min(threads.budget() if hidden.device.type == "cpu" else 1, len(starts)))
        threads.run_all([functools.partial(_lens_chunks, starts[g::groups], chunk, hidden, target, weight, bias,
                                           temperature, per_position, grad) for g in range(groups)])
        ctx.save_for_backward(grad)
        return per_position

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out.unsqueeze(-1), None, None, None, None, None


def _lens_chunks(starts: list[int], chunk: int, hidden: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None, temperature: float, per_position: torch.Tensor,
                 grad: torch.Tensor | None) -> None:
    """The chunks of :class:`_LensKL` that begin at ``starts``: KL into ``per_position``, dKL/dh into ``grad``."""
    n_positions = hidden.shape[0]
    with torch.no_grad():
        for start in starts:
            stop = min(start + chunk, n_positions)
            n = stop - start
            logits = F.linear(torch.cat([target[start:stop], hidden[start:stop]]), weight, bias)  # p rows, then q
            if temperature != 1.0:
                logits.div_(temperature)
            logits.sub_(logits.amax(-1, keepdim=True))
            diff = logits[:n] - logits[n:]
            probs = logits.exp_()
            sums = probs.sum(-1, keepdim=True)
            probs.div_(sums)
            log_sums = sums.squeeze(-1).log_()
            per_position[start:stop] = torch.linalg.vecdot(probs[:n], diff) + log_sums[n:] - log_sums[:n]
            if grad is not None:
                d_logits = probs[n:].sub_(probs[:n])
                if temperature != 1.0:
                    d_logits.div_(temperature)
                grad[start:stop] = d_logits @ weight


def lens_kl(hidden: torch.Tensor, target: torch.Tensor, unembed: torch.nn.Module, mask: torch.Tensor | None = None,
            temperature: float = 1.0, chunk: int | None = None) -> torch.Tensor:
    """:func:`kl` of ``unembed(hidden)`` to ``unembed(target)`` without materialising either logits tensor.

    ``hidden`` and ``target`` are ``(..., d)`` streams already through the final norm; ``unembed`` is the
    reference model's output embedding (an ``nn.Linear``), frozen; ``target`` takes no gradient. Same
    value and gradient as ``kl(unembed(hidden), unembed(target), mask, temperature)`` up to float
    rounding (tests/test_losses.py), at a fraction of its memory traffic (benchmarks case h).
    """
    if target.requires_grad or unembed.weight.requires_grad:
        raise ValueError("lens_kl: the target stream and the unembedding must be frozen.")
    lead = hidden.shape[:-1]
    if chunk is None:  # 2^19 logits per stream and chunk (4 MiB for both): in cache, and the GEMM still efficient
        chunk = max(16, 2**19 // unembed.weight.shape[0])
    dtype = torch.promote_types(hidden.dtype, torch.float32)  # as kl: at least float32
    weight = unembed.weight.to(dtype)
    bias = unembed.bias.to(dtype) if unembed.bias is not None else None
    per_position = _LensKL.apply(hidden.to(dtype).reshape(-1, hidden.shape[-1]),
                                 target.to(dtype).reshape(-1, target.shape[-1]), weight, bias, float(temperature),
                                 int(chunk))
    return _masked_mean(per_position.reshape(lead), mask)


def labelled_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], ignore_index: int = -100) -> torch.Tensor:
    """The mean next-token cross-entropy over the positions with a label: ``model(..., labels=...).loss``.

    The unembedding runs only at the positions whose next token is labelled (a task's answer tokens,
    a fifth of an SFT batch), not at every position. A model whose output embedding is not a plain
    ``nn.Linear`` (logit scaling, soft-capping) takes transformers' own loss.
    """
    ids, mask, labels = batch["input_ids"], batch.get("attention_mask"), batch["labels"]
    unembed = model.get_output_embeddings()
    inner = getattr(model, "base_model", None)
    if type(unembed) is not torch.nn.Linear or inner is None or inner is model:
        return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    hidden = inner(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # after the final norm
    targets = labels[:, 1:]  # position t predicts token t + 1
    keep = targets != ignore_index
    logits = unembed(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


DISTANCES: dict[str, Callable[..., torch.Tensor]] = registry(names.DISTANCES, {"mse": mse, "cosine": cosine, "kl": kl})
KINDS = names.LOSS_KINDS
# How a residual loss reads the two streams (``loss.reading``): ``hidden`` compares the vectors as they
# are (``kl`` = softmax over the hidden dimension); ``logit_lens`` first decodes both through the
# reference model's final norm and unembedding, so ``kl`` compares next-token distributions.
READINGS = names.READINGS


def get_distance(name: str, temperature: float = 1.0) -> Callable[..., torch.Tensor]:
    """The distance ``name`` as ``f(pred, target, mask)``; ``temperature`` applies to ``kl`` only."""
    if name not in DISTANCES:
        from grafting.errors import ConfigError

        raise ConfigError("loss.distance", f"unknown distance {name!r}; allowed: {sorted(DISTANCES)}.")
    if name == "kl":
        return functools.partial(kl, temperature=temperature)
    return DISTANCES[name]

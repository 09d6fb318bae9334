"""Parameter deltas and the module-kind table that decides how each delta is compressed.

The pattern table :data:`MODULE_PATTERNS` is the only place in the SkillPack code that knows
parameter names of GPTNeoX (Pythia), GPT-2 and Llama.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from grafting import names

MODULE_KINDS = names.MODULE_KINDS

# Checked in order; the first match wins. Norms come first because Llama's
# "post_attention_layernorm" would otherwise match the attention patterns.
# Names are matched on whole dotted components, so "wte" never matches "wte_extra".
MODULE_PATTERNS: tuple[tuple[str, str], ...] = (
    # GPTNeoX: input_layernorm, post_attention_layernorm, final_layer_norm; GPT-2: ln_1, ln_2, ln_f;
    # Llama: input_layernorm, post_attention_layernorm, norm (and q_norm/k_norm in its descendants).
    ("norm", r"(?:^|\.)(?:ln_\w+|\w*layernorm\w*|\w*layer_norm\w*|\w*norm)(?:\.|$)"),
    # GPTNeoX embed_in; GPT-2 wte (tokens) and wpe (positions); Llama embed_tokens.
    ("embedding", r"(?:^|\.)(?:embed_in|wte|wpe|embed_tokens)(?:\.|$)"),
    # GPTNeoX embed_out; GPT-2 and Llama lm_head.
    ("lm_head", r"(?:^|\.)(?:embed_out|lm_head)(?:\.|$)"),
    # GPTNeoX attention.{query_key_value,dense}; GPT-2 attn.{c_attn,c_proj}; Llama self_attn.{q,k,v,o}_proj.
    ("attention", r"(?:^|\.)(?:attention\.(?:query_key_value|dense)|attn\.(?:c_attn|c_proj)"
                  r"|self_attn\.(?:q_proj|k_proj|v_proj|o_proj))(?:\.|$)"),
    # GPTNeoX mlp.dense_{h_to_4h,4h_to_h}; GPT-2 mlp.{c_fc,c_proj}; Llama mlp.{gate,up,down}_proj.
    ("mlp", r"(?:^|\.)mlp\.(?:dense_h_to_4h|dense_4h_to_h|c_fc|c_proj|gate_proj|up_proj|down_proj)(?:\.|$)"),
)
_COMPILED = tuple((kind, re.compile(pattern)) for kind, pattern in MODULE_PATTERNS)


def module_kind(param_name: str, tensor: Tensor | None = None) -> str:
    """Classifies a parameter by name into one of :data:`MODULE_KINDS`.

    Args:
        param_name: dotted state-dict name, e.g. ``gpt_neox.layers.0.attention.dense.weight``.
        tensor: optional; accepted so ``(name, tensor)`` pairs can be passed straight through. The
            kind is decided by the name alone, so a bias of an attention projection is "attention";
            the compression policy routes 1-D tensors (biases) to dense storage separately.

    Returns:
        The kind; "other" for names no pattern knows.
    """
    del tensor  # the kind must be reproducible from the name in a pack's manifest
    for kind, pattern in _COMPILED:
        if pattern.search(param_name):
            return kind
    return "other"


def compute_delta(
    base_state: Mapping[str, Tensor],
    tuned_state: Mapping[str, Tensor],
    *,
    drop_zero: bool = True,
) -> dict[str, Tensor]:
    """``tuned - base`` in float32 for every floating-point entry.

    Args:
        base_state: state dict of the base (target) model.
        tuned_state: state dict of the fine-tuned model; must have the same keys and shapes.
        drop_zero: omit entries whose delta is exactly zero (frozen parameters), so a pack only
            stores what training changed.

    Returns:
        Name -> float32 delta. Tied parameters (names sharing storage in ``tuned_state``, e.g.
        GPT-2's ``lm_head.weight`` and ``transformer.wte.weight``) appear once, under the first name,
        so applying the delta never adds it twice.
    """
    missing = sorted(set(base_state) - set(tuned_state))
    extra = sorted(set(tuned_state) - set(base_state))
    if missing or extra:
        raise ValueError(f"state dicts differ: missing in tuned {missing[:5]}, extra in tuned {extra[:5]}")
    deltas: dict[str, Tensor] = {}
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    for name, base in base_state.items():
        tuned = tuned_state[name]
        if not (base.is_floating_point() and tuned.is_floating_point()):
            continue  # integer buffers (position ids, masks) are not learned
        if base.shape != tuned.shape:
            raise ValueError(f"shape mismatch for {name}: base {tuple(base.shape)} vs tuned {tuple(tuned.shape)}")
        alias = (tuned.data_ptr(), tuple(tuned.shape), tuple(tuned.stride()))
        if tuned.numel() and alias in seen:
            continue
        seen.add(alias)
        delta = tuned.detach().to(torch.float32) - base.detach().to(torch.float32)
        if drop_zero and not bool(delta.any()):
            continue
        deltas[name] = delta.cpu()
    return deltas


def add_delta(base_state: Mapping[str, Tensor], delta: Mapping[str, Tensor], scale: float = 1.0) -> dict[str, Tensor]:
    """Returns a new state ``base + scale * delta`` (in float32, cast back to each base dtype)."""
    unknown = sorted(set(delta) - set(base_state))
    if unknown:
        raise KeyError(f"delta has keys the base lacks: {unknown[:5]}")
    out = {}
    for name, base in base_state.items():
        if name in delta:
            out[name] = (base.float() + scale * delta[name].float().to(base.device)).to(base.dtype)
        else:
            out[name] = base.clone()
    return out

"""Model surgery: the one place that knows where blocks, norms and embeddings live.

Every other module asks this file for a model's blocks, its final norm or its LoRA targets,
so supporting a new architecture family is one new entry in ``ARCHITECTURES``.

Functions that change a model in place end in ``_``; temporary surgery is a context manager
that restores the model in ``finally``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    """Where the parts of one causal-LM family live (attribute paths from the *ForCausalLM model)."""

    family: str
    blocks: str  # ModuleList of transformer blocks
    final_norm: str
    rotary: str | None  # model-level rotary embedding, None for learned positions
    lora_targets: tuple[str, ...]  # leaf Linear names inside a block, for peft
    # How the model calls a block: the positional arguments after ``hidden_states``, and the KV cache's keyword
    # (what a block of another family needs translated: :func:`block_call`, :func:`call_block`).
    block_args: tuple[str, ...] = ()
    cache_arg: str = "cache"


ARCHITECTURES: dict[str, Architecture] = {
    "gpt_neox": Architecture(
        family="gpt_neox",
        blocks="gpt_neox.layers",
        final_norm="gpt_neox.final_layer_norm",
        rotary="gpt_neox.rotary_emb",
        lora_targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
        cache_arg="layer_past",
    ),
    "gpt2": Architecture(
        family="gpt2",
        blocks="transformer.h",
        final_norm="transformer.ln_f",
        rotary=None,
        lora_targets=("c_attn", "c_proj", "c_fc"),
        block_args=("cache", "attention_mask", "encoder_hidden_states"),
    ),
    "llama": Architecture(
        family="llama",
        blocks="model.layers",
        final_norm="model.norm",
        rotary="model.rotary_emb",
        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    ),
}
# Families whose layout is Llama's (same attribute names).
for _alias in ("mistral", "qwen2", "qwen3"):
    ARCHITECTURES[_alias] = ARCHITECTURES["llama"]


def architecture(model: nn.Module) -> Architecture:
    """Return the :class:`Architecture` of a transformers causal LM, or raise a clear error."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"Unsupported architecture {model_type!r}; supported: {sorted(ARCHITECTURES)}. "
            "Add an entry to grafting.surgery.ARCHITECTURES."
        )
    return ARCHITECTURES[model_type]


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def get_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's transformer blocks, in order."""
    return get_submodule(model, architecture(model).blocks)


def num_blocks(model: nn.Module) -> int:
    return len(get_blocks(model))


def hidden_size(model: nn.Module) -> int:
    return int(model.config.hidden_size)


def final_norm(model: nn.Module) -> nn.Module:
    return get_submodule(model, architecture(model).final_norm)


def logit_lens(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Read a residual stream as next-token logits through ``model``'s final norm and unembedding."""
    return model.get_output_embeddings()(final_norm(model)(hidden))


def rotary_embedding(model: nn.Module) -> nn.Module | None:
    arch = architecture(model)
    return get_submodule(model, arch.rotary) if arch.rotary else None


def block_param_prefix(model: nn.Module, index: int) -> str:
    """State-dict prefix of block ``index``, e.g. ``gpt_neox.layers.2.``."""
    return f"{architecture(model).blocks}.{index}."


def check_block_index(model: nn.Module, index: int, key: str, allow_end: bool = False) -> None:
    """Raise a clear error naming the config ``key`` if ``index`` is not a valid block index."""
    n = num_blocks(model)
    hi = n if allow_end else n - 1
    if not isinstance(index, int) or not 0 <= index <= hi:
        raise ValueError(f"{key}={index} is out of range: the model has {n} blocks, allowed 0..{hi}.")


# ----------------------------------------------------------------------------------------------
# Calling a block of one family inside a model of another
# ----------------------------------------------------------------------------------------------

# Arguments that only an encoder-decoder model fills (GPT-2's block takes them; a decoder-only host passes None).
_ENCODER_ARGS = ("encoder_hidden_states", "encoder_attention_mask")


def block_call(family: str, args: tuple, kwargs: dict) -> dict:
    """The arguments ``family``'s model passes a block (after ``hidden_states``), under family-neutral names:
    ``attention_mask``, ``position_ids``, ``cache``, ``use_cache``, ``position_embeddings`` and any others."""
    arch = ARCHITECTURES[family]
    call = dict(zip(arch.block_args, args, strict=False))
    call.update(kwargs)
    if arch.cache_arg != "cache" and arch.cache_arg in call:
        call["cache"] = call.pop(arch.cache_arg)
    return call


def call_block(family: str, block: nn.Module, hidden: torch.Tensor, call: dict, rotary: nn.Module | None):
    """Call a block of ``family`` as its own model would, from :func:`block_call`'s family-neutral arguments.

    Positions are the block's own business: a rotary family gets ``position_embeddings`` from ``rotary``, its
    own model's rotary embedding (head size and base as it was trained), at the host's ``position_ids``; a
    family with learned positions gets none (they were added to the residual before the first block). The
    causal mask and the KV cache are the host's: the block writes its keys and values to the slot of the
    host position it occupies (:func:`set_attention_layer_idx_`).
    """
    arch = ARCHITECTURES[family]
    kwargs = {k: v for k, v in call.items() if k not in (*_ENCODER_ARGS, "position_embeddings")}
    if "cache" in kwargs and arch.cache_arg != "cache":
        kwargs[arch.cache_arg] = kwargs.pop("cache")
    if rotary is not None:
        position_ids = call.get("position_ids")
        if position_ids is None:  # every supported host passes them; without, the positions of a fresh sequence
            position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        kwargs["position_ids"] = position_ids
        kwargs["position_embeddings"] = rotary(hidden, position_ids=position_ids)
    return block(hidden, **kwargs)


# ----------------------------------------------------------------------------------------------
# Truncated forwards
# ----------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised by a pre-hook to end a forward pass early, carrying the captured residual."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden


def _stop_module(model: nn.Module, k: int) -> nn.Module:
    """The module whose *input* is the residual stream entering block ``k`` (k == n: final norm)."""
    blocks = get_blocks(model)
    return blocks[k] if k < len(blocks) else final_norm(model)


def residual_before(
    model: nn.Module,
    input_ids: torch.Tensor,
    k: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Residual stream entering block ``k`` (``k == n_blocks``: entering the final norm).

    Runs the model's own forward (so masks and rotary embeddings are exactly the model's) and
    stops it with an exception in a pre-hook: blocks ``k`` and later are never computed.
    """
    check_block_index(model, k, "k", allow_end=True)

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        raise _StopForward(hidden)

    handle = _stop_module(model, k).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward as stop:
        return stop.hidden
    finally:
        handle.remove()
    raise RuntimeError(f"block {k} was never reached during the forward pass")


def block_inputs(
    model: nn.Module,
    input_ids: torch.Tensor,
    k: int,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple, dict]:
    """``(hidden, args, kwargs)`` block ``k`` is called with: the residual entering it and the rest of the
    call (masks, position embeddings), which the model builds once and passes to every block alike.

    A block called by hand as ``block(hidden, *args, **kwargs)`` computes what it computes in the model.
    """
    check_block_index(model, k, "k")
    captured: dict = {}

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["args"], captured["kwargs"] = args[1:], dict(kwargs)
        raise _StopForward(args[0] if args else captured["kwargs"].pop("hidden_states"))

    handle = get_blocks(model)[k].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward as stop:
        return stop.hidden, captured["args"], captured["kwargs"]
    finally:
        handle.remove()
    raise RuntimeError(f"block {k} was never reached during the forward pass")


def residuals_before(
    model: nn.Module,
    input_ids: torch.Tensor,
    ks: list[int],
    attention_mask: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """Residual streams entering each block in ``ks``, from one forward stopped after the last one."""
    stop_at = max(ks)
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def make_capture(k: int):
        def capture(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured[k] = args[0] if args else kwargs["hidden_states"]

        return capture

    for k in ks:
        if k != stop_at:
            handles.append(_stop_module(model, k).register_forward_pre_hook(make_capture(k), with_kwargs=True))
    try:
        captured[stop_at] = residual_before(model, input_ids, stop_at, attention_mask)
    finally:
        for h in handles:
            h.remove()
    return captured


# ----------------------------------------------------------------------------------------------
# Block swaps
# ----------------------------------------------------------------------------------------------


def swap_block_(model: nn.Module, index: int, block: nn.Module) -> nn.Module:
    """Put ``block`` at position ``index`` in place; return the block that was there."""
    check_block_index(model, index, "index")
    blocks = get_blocks(model)
    old = blocks[index]
    blocks[index] = block
    return old


@contextlib.contextmanager
def swapped_block(model: nn.Module, index: int, block: nn.Module) -> Iterator[nn.Module]:
    """Temporarily run ``model`` with ``block`` at ``index``; the original is restored in ``finally``."""
    old = swap_block_(model, index, block)
    try:
        yield model
    finally:
        get_blocks(model)[index] = old


def set_attention_layer_idx_(block: nn.Module, layer_idx: int) -> None:
    """Point every attention module in ``block`` at KV-cache slot ``layer_idx``.

    A block moved to another position (or another model) must write its keys and values to the
    slot of the position it now occupies, or generation with a KV cache mixes two layers' states.
    """
    for module in block.modules():
        if hasattr(module, "layer_idx") and module is not block:
            module.layer_idx = layer_idx


# ----------------------------------------------------------------------------------------------
# Widening an initialisation
# ----------------------------------------------------------------------------------------------


def head_dim(model: nn.Module) -> int:
    config = model.config
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


@torch.no_grad()
def embed_narrow_(wide: nn.Module, narrow: nn.Module) -> nn.Module:
    """Copy every parameter of ``narrow`` into the leading slice of the same parameter of ``wide``, in place.

    The wider model then *contains* the narrow model's initialisation: its first ``d`` hidden units,
    first heads, first MLP units and first blocks hold exactly the narrow model's numbers, and only the
    added ones are its own. This is how a wider host shares the vanilla model's initialisation.
    Both must be one family with the same head size, so that a head's query, key and value rows (laid
    out head by head in every supported family) keep their place; the wider model has more heads.
    """
    if architecture(wide).family != architecture(narrow).family:
        raise ValueError("embed_narrow_: both models must be one architecture family.")
    if head_dim(wide) != head_dim(narrow):
        raise ValueError(f"embed_narrow_: head sizes differ ({head_dim(wide)} vs {head_dim(narrow)}); widen by "
                         "adding heads, not by growing them.")
    wide_params = dict(wide.named_parameters())
    for name, small in narrow.named_parameters():
        if name not in wide_params:
            raise ValueError(f"embed_narrow_: {name} of the narrow model has no counterpart in the wide one.")
        big = wide_params[name]
        if small.dim() != big.dim() or any(s > b for s, b in zip(small.shape, big.shape, strict=True)):
            raise ValueError(f"embed_narrow_: {name} has shape {tuple(small.shape)}, not inside {tuple(big.shape)}.")
        big[tuple(slice(0, s) for s in small.shape)] = small
    return wide

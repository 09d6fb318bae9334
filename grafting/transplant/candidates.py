"""Which modules can be transplanted between two models.

A candidate is a leaf projection (``nn.Linear`` or transformers' GPT-2 ``Conv1D``) with the same qualified
name and the same weight/bias shapes in both models. Embeddings, norms and the LM head are never candidates:
they are not projections inside a block, and the LM head is usually tied to the input embeddings.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from transformers.pytorch_utils import Conv1D

__all__ = ["LINEAR_TYPES", "candidate_modules", "check_compatible", "linear_modules", "param_shapes"]

# Conv1D is a Linear with a transposed weight; both have exactly `weight` and optional `bias`.
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)


def _excluded_ids(model: nn.Module) -> set[int]:
    """Ids of modules/parameters that must never be candidates (LM head, anything tied to embeddings)."""
    ids: set[int] = set()
    for getter in ("get_output_embeddings", "get_input_embeddings"):
        fn = getattr(model, getter, None)
        mod = fn() if callable(fn) else None
        if isinstance(mod, nn.Module):
            ids.add(id(mod))
            if isinstance(getattr(mod, "weight", None), nn.Parameter):
                ids.add(id(mod.weight))
    return ids


def linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Leaf linear-like modules of one model, by qualified name, minus LM head and embedding-tied layers.

    Args:
        model: any ``nn.Module``; transformers models are recognised via ``get_output_embeddings()``.

    Returns:
        Ordered mapping ``name -> module`` in ``named_modules()`` order.
    """
    excluded = _excluded_ids(model)
    out: dict[str, nn.Module] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, LINEAR_TYPES) or next(mod.children(), None) is not None:
            continue
        if id(mod) in excluded or id(getattr(mod, "weight", None)) in excluded:
            continue
        out[name] = mod
    return out


def param_shapes(mod: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """``(weight shape, bias shape or None)`` of a linear-like module."""
    bias = getattr(mod, "bias", None)
    return tuple(mod.weight.shape), (tuple(bias.shape) if bias is not None else None)


def _mismatches(
    src: dict[str, nn.Module], tgt: dict[str, nn.Module], names: Iterable[str] | None
) -> tuple[list[str], list[str], list[str]]:
    """Return (only in source, only in target, shape mismatch lines) over ``names`` or all names."""
    wanted = list(dict.fromkeys(names)) if names is not None else list(dict.fromkeys([*src, *tgt]))
    only_src = [n for n in wanted if n in src and n not in tgt]
    only_tgt = [n for n in wanted if n in tgt and n not in src]
    shapes = []
    for n in wanted:
        if n in src and n in tgt and param_shapes(src[n]) != param_shapes(tgt[n]):
            (sw, sb), (tw, tb) = param_shapes(src[n]), param_shapes(tgt[n])
            shapes.append(f"{n}: source weight {sw} bias {sb} vs target weight {tw} bias {tb}")
    if names is not None:
        # A requested name missing from both models is as much an error as a one-sided one.
        missing = [n for n in wanted if n not in src and n not in tgt]
        only_src += [f"{n} (in neither model as a transplantable linear)" for n in missing]
    return only_src, only_tgt, shapes


def check_compatible(source: nn.Module, target: nn.Module, names: Iterable[str] | None = None) -> None:
    """Raise a ``ValueError`` listing every difference between the two models' linear modules.

    Args:
        source: model the weights come from.
        target: model the weights go into.
        names: the modules a caller asks for; ``None`` checks all linear modules of both models.

    Raises:
        ValueError: names present in only one model (or neither), and weight/bias shape mismatches.
    """
    only_src, only_tgt, shapes = _mismatches(linear_modules(source), linear_modules(target), names)
    if not (only_src or only_tgt or shapes):
        return
    lines = ["source and target are not transplant-compatible:"]
    if only_src:
        lines.append(f"  only in source ({len(only_src)}): " + ", ".join(only_src))
    if only_tgt:
        lines.append(f"  only in target ({len(only_tgt)}): " + ", ".join(only_tgt))
    if shapes:
        lines.append(f"  shape mismatches ({len(shapes)}):")
        lines += [f"    {s}" for s in shapes]
    raise ValueError("\n".join(lines))


def candidate_modules(source: nn.Module, target: nn.Module) -> list[str]:
    """Names of leaf linear modules present in both models with identical weight and bias shapes.

    Args:
        source: model the weights would come from.
        target: model the weights would go into.

    Returns:
        Candidate names in the target's module order.

    Raises:
        ValueError: when there is no candidate at all (e.g. different widths), listing what differs.
    """
    src, tgt = linear_modules(source), linear_modules(target)
    names = [n for n in tgt if n in src and param_shapes(src[n]) == param_shapes(tgt[n])]
    if not names:
        check_compatible(source, target)  # raises with the full list of differences
        raise ValueError("source and target have no linear modules to transplant")
    return names

"""What every compressor shares: the registry, :class:`CompressedTensor`, the :class:`Compressor` base class,
:func:`decompress`, and the sparse encoding of the element-wise methods.

The compressors themselves are one file each in this folder (``<name>.py`` registers ``<name>``).

Every compressor turns a delta into a :class:`CompressedTensor`: a dict of named tensors (exactly
what is saved, so their ``nbytes`` is the honest size) plus a JSON-able ``meta`` dict from which
:func:`decompress` rebuilds the delta without the original compressor object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from grafting import names
from grafting.skillpack.quant import pack_bits, unpack_bits

COMPRESSORS: dict[str, type[Compressor]] = {}


@dataclass
class CompressedTensor:
    """A compressed delta: the tensors to save and the JSON-able meta needed to rebuild it."""

    tensors: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data (what the safetensors file holds, minus its small header)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.meta["shape"])


#: Class decorator adding a compressor to :data:`COMPRESSORS` under ``name``. The package's own are listed in
#: :data:`grafting.names.COMPRESSORS` too (the names a config may use; checked when the package is imported).
register = names.registrar(COMPRESSORS, "compressor")


def get_compressor(name: str, params: Mapping[str, Any] | None = None) -> Compressor:
    """Instantiates a registered compressor, with a clear error for unknown names or params."""
    if name not in COMPRESSORS:
        raise ValueError(f"unknown compressor {name!r}; known: {sorted(COMPRESSORS)}")
    try:
        return COMPRESSORS[name](**dict(params or {}))
    except TypeError as err:
        raise TypeError(f"bad params for compressor {name!r}: {err}") from err


def decompress(c: CompressedTensor) -> Tensor:
    """Rebuilds the float32 delta from any :class:`CompressedTensor`."""
    method = c.meta.get("method")
    if method not in COMPRESSORS:
        raise ValueError(f"unknown compression method {method!r} in meta; known: {sorted(COMPRESSORS)}")
    return COMPRESSORS[method].decompress(c)


class Compressor:
    """Base class. Subclasses take their params as keyword arguments and validate them in ``__init__``."""

    name: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params = params  # JSON-able; written to the manifest

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        """Compresses one delta. ``key`` (the parameter name) only seeds randomised methods."""
        raise NotImplementedError

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        """Float32 delta of shape ``c.meta["shape"]``."""
        raise NotImplementedError

    def _meta(self, delta: Tensor, **extra: Any) -> dict[str, Any]:
        meta = {"method": self.name, "params": dict(self.params), "shape": list(delta.shape),
                "dtype": str(delta.dtype).removeprefix("torch.")}
        meta.update(extra)
        return meta


def keep_count(fraction: float, n: int) -> int:
    """Entries kept for a density ``fraction`` of ``n``: round half up, at least 1 when fraction > 0."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    k = math.floor(fraction * n + 0.5)
    return min(n, max(k, 1 if fraction > 0 and n > 0 else 0))


# ----------------------------------------------------------------------------------- sparse encoding


def encode_sparse(mask: Tensor, values: Tensor) -> tuple[dict[str, Tensor], str]:
    """Stores the kept entries of a flat boolean ``mask`` in the cheaper honest encoding.

    Flat int32 indices cost 4 bytes per kept entry (int64 past 2**31 entries); a packed bitmask
    costs ``n / 8`` bytes whatever is kept. Indices win below a density of 1/32 (1/64 for int64).

    Args:
        mask: flat bool tensor of length n.
        values: the kept values, in index order.
    """
    n = mask.numel()
    k = int(mask.sum())
    index_dtype = torch.int32 if n < 2**31 else torch.int64
    index_bytes = k * (4 if index_dtype == torch.int32 else 8)
    if (n + 7) // 8 < index_bytes:
        return {"mask": pack_bits(mask, 1), "values": values}, "bitmask"
    idx = mask.nonzero().reshape(-1).to(index_dtype)
    return {"indices": idx, "values": values}, str(index_dtype).removeprefix("torch.")


def decode_sparse(tensors: Mapping[str, Tensor], encoding: str, n: int) -> Tensor:
    """Dense flat float32 tensor of length ``n`` from :func:`encode_sparse` output."""
    out = torch.zeros(n, dtype=torch.float32)
    values = tensors["values"].float()
    if encoding == "bitmask":
        mask = unpack_bits(tensors["mask"], 1, n).bool()
        out[mask] = values
    else:
        out[tensors["indices"].long()] = values
    return out

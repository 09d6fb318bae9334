"""Delta compressors: a name registry plus the element-wise methods (dense, magnitude, BitDelta, DARE).

The SVD-based methods live in :mod:`grafting.skillpack.svd` (and LoRA factors in
:mod:`grafting.skillpack.lora`) and register into the same :data:`COMPRESSORS` table; the package's
``__init__`` imports them, so the table is complete whichever submodule is imported first, without
this module importing them back. A new method is one class with ``@register("name")``.

Every compressor turns a delta into a :class:`CompressedTensor`: a dict of named tensors (exactly
what is saved, so their ``nbytes`` is the honest size) plus a JSON-able ``meta`` dict from which
:func:`decompress` rebuilds the delta without the original compressor object.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from grafting.skillpack.quant import pack_bits, resolve_dtype, unpack_bits

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


def register(name: str):
    """Class decorator adding a compressor to :data:`COMPRESSORS` under ``name``. The package's own are listed in
    :data:`grafting.names.COMPRESSORS` too (the names a config may use; checked when the package is imported)."""

    def wrap(cls: type[Compressor]) -> type[Compressor]:
        if name in COMPRESSORS:
            raise ValueError(f"compressor {name!r} is already registered")
        cls.name = name
        COMPRESSORS[name] = cls
        return cls

    return wrap


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


# --------------------------------------------------------------------------------------- the methods


@register("dense")
class Dense(Compressor):
    """Stores the delta as is, optionally in float16/bfloat16 to halve its size."""

    def __init__(self, dtype: str = "float32") -> None:
        resolve_dtype(dtype)
        super().__init__(dtype=dtype)

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        # clone: the pack must not alias the caller's tensor
        values = delta.detach().to(resolve_dtype(self.params["dtype"])).clone().contiguous()
        return CompressedTensor({"values": values}, self._meta(delta))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        return c.tensors["values"].float().reshape(c.shape)


@register("none")
class NoCompression(Dense):
    """Uncompressed float32, for norms (GraftLLM leaves them untouched)."""

    def __init__(self) -> None:
        Compressor.__init__(self)
        self.params = {}

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        values = delta.detach().to(torch.float32).clone().contiguous()
        return CompressedTensor({"values": values}, self._meta(delta))


@register("keep")
class Keep(NoCompression):
    """Alias of ``none``."""


@register("magnitude")
class Magnitude(Compressor):
    """Keeps the ``keep_count(alpha, n)`` entries with the largest ``|Δ|``; the rest become zero.

    Ties at the threshold are broken by ``torch.topk`` (arbitrary but deterministic).
    """

    def __init__(self, alpha: float = 0.1, dtype: str = "float32") -> None:
        keep_count(alpha, 0)  # validates alpha
        resolve_dtype(dtype)
        super().__init__(alpha=float(alpha), dtype=dtype)

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        flat = delta.detach().float().reshape(-1)
        k = keep_count(self.params["alpha"], flat.numel())
        idx = torch.topk(flat.abs(), k, sorted=False).indices if k else torch.zeros(0, dtype=torch.long)
        mask = torch.zeros(flat.numel(), dtype=torch.bool)
        mask[idx] = True
        values = flat[mask].to(resolve_dtype(self.params["dtype"]))
        tensors, encoding = encode_sparse(mask, values)
        return CompressedTensor(tensors, self._meta(delta, encoding=encoding, kept=k))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        n = math.prod(c.shape)
        return decode_sparse(c.tensors, c.meta["encoding"], n).reshape(c.shape)


@register("bitdelta")
class BitDelta(Compressor):
    """``sign(Δ) * mean|Δ|``: one packed bit per entry plus one float32 scale (BitDelta, no distillation).

    Zero entries get sign +1, since one bit cannot encode three values.
    """

    def __init__(self) -> None:
        super().__init__()

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        flat = delta.detach().float().reshape(-1)
        scale = flat.abs().mean().reshape(1) if flat.numel() else torch.zeros(1)
        return CompressedTensor({"signs": pack_bits(flat >= 0, 1), "scale": scale}, self._meta(delta))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        n = math.prod(c.shape)
        signs = unpack_bits(c.tensors["signs"], 1, n).float() * 2 - 1
        return (signs * c.tensors["scale"].float()).reshape(c.shape)


@register("dare")
class Dare(Compressor):
    """DARE: drop each entry with probability ``p``, rescale survivors by ``1/(1-p)``; stored sparse.

    The mask is drawn from a generator seeded with ``seed`` and a CRC of the parameter name, so
    equal-shaped matrices get independent masks and a rerun gives the same pack.
    """

    def __init__(self, p: float = 0.9, seed: int = 0, rescale: bool = True, dtype: str = "float32") -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dare drop probability p must be in [0, 1), got {p}")
        resolve_dtype(dtype)
        super().__init__(p=float(p), seed=int(seed), rescale=bool(rescale), dtype=dtype)

    def compress(self, delta: Tensor, *, key: str = "") -> CompressedTensor:
        flat = delta.detach().float().reshape(-1)
        gen = torch.Generator().manual_seed((self.params["seed"] + zlib.crc32(key.encode())) % 2**63)
        mask = torch.rand(flat.numel(), generator=gen) >= self.params["p"]
        factor = 1.0 / (1.0 - self.params["p"]) if self.params["rescale"] else 1.0
        values = (flat[mask] * factor).to(resolve_dtype(self.params["dtype"]))
        tensors, encoding = encode_sparse(mask, values)
        return CompressedTensor(tensors, self._meta(delta, encoding=encoding, kept=int(mask.sum())))

    @classmethod
    def decompress(cls, c: CompressedTensor) -> Tensor:
        n = math.prod(c.shape)
        return decode_sparse(c.tensors, c.meta["encoding"], n).reshape(c.shape)

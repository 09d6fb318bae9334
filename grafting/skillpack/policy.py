"""Module-aware compression: pick a compressor per parameter from its module kind.

A policy maps each kind of :data:`grafting.skillpack.delta.MODULE_KINDS`, plus ``"vector"`` (any
1-D tensor that is not a norm: biases), to a compressor spec. A spec is a plain mapping, as it
comes from a Hydra config::

    {"method": "svd_quant", "rank": 64}            # params inline
    {"method": "svd_quant", "params": {"rank": 64}}  # or nested
    "dense"                                          # or just a name

The default, :data:`DEFAULT_POLICY`, is GraftLLM's scheme. The numbers (alpha, rank, beta) are our
choice; the paper's exact values are tuned per model and not all published. The SkillPack stages
take their policies from ``conf/skillpack/default.yaml``, whose ``graftllm`` entry is tuned for the
tiny offline models (smaller ranks, SVD on lm_head).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from grafting import names
from grafting.skillpack.compressors import CompressedTensor, Compressor, decompress, get_compressor
from grafting.skillpack.delta import module_kind

POLICY_KEYS = names.POLICY_KEYS

DEFAULT_POLICY: dict[str, dict[str, Any]] = {
    "embedding": {"method": "magnitude", "alpha": 0.1},
    "lm_head": {"method": "magnitude", "alpha": 0.1},
    "attention": {"method": "svd_quant", "rank": 64},
    "mlp": {"method": "svd_quant", "beta": 0.9},
    "norm": {"method": "none"},
    "other": {"method": "dense"},
    "vector": {"method": "dense"},  # 1-D biases of attention/MLP: tiny, so kept dense
}


def _plain(value: Any) -> Any:
    """OmegaConf containers (or any mapping/sequence) -> plain dicts and lists, so meta stays JSON-able."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def parse_spec(spec: Any, key: str = "?") -> tuple[str, dict[str, Any]]:
    """Normalises a compressor spec to ``(method, params)``; ``key`` names the config entry in errors."""
    spec = _plain(spec)
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str):
        return spec[0], dict(spec[1] or {})
    if isinstance(spec, dict):
        if "method" not in spec:
            raise ValueError(f"policy.{key}: spec {spec} has no 'method'")
        method = str(spec.pop("method"))
        params = dict(spec.pop("params", None) or {})
        params.update(spec)
        return method, params
    raise ValueError(f"policy.{key}: cannot read compressor spec {spec!r}")


class ModuleAwareCompressor:
    """Compresses a whole delta state dict, one compressor per module kind.

    Args:
        policy: overrides of :data:`DEFAULT_POLICY`, kind -> spec. Kinds not given keep the default.
            Unknown kinds or methods, and bad params, raise here, before any compression runs.
    """

    def __init__(self, policy: Mapping[str, Any] | None = None) -> None:
        merged: dict[str, Any] = dict(DEFAULT_POLICY)
        for key, spec in dict(policy or {}).items():
            if key not in POLICY_KEYS:
                raise ValueError(f"policy.{key}: unknown module kind; expected one of {POLICY_KEYS}")
            merged[key] = spec
        self.compressors: dict[str, Compressor] = {}
        for key, spec in merged.items():
            method, params = parse_spec(spec, key)
            try:
                self.compressors[key] = get_compressor(method, params)
            except (TypeError, ValueError) as err:
                raise ValueError(f"policy.{key}: {err}") from err

    def route(self, name: str, tensor: Tensor) -> tuple[str, Compressor]:
        """The kind of ``name`` and the compressor that handles it."""
        kind = module_kind(name, tensor)
        key = "vector" if kind != "norm" and tensor.dim() < 2 else kind
        return kind, self.compressors[key]

    def compress(self, delta_state: Mapping[str, Tensor],
                 hessians: Mapping[str, Tensor] | None = None) -> dict[str, CompressedTensor]:
        """Name -> :class:`CompressedTensor`; each meta also records the module ``kind``.

        ``hessians``: parameter name -> (in × in) input second moment (:mod:`grafting.skillpack.calibration`),
        passed to the compressors that use calibration data (GPTQ).
        """
        out = {}
        for name, delta in delta_state.items():
            kind, compressor = self.route(name, delta)
            if getattr(compressor, "uses_calibration", False) and hessians and name in hessians:
                c = compressor.compress(delta, key=name, hessian=hessians[name])
            else:
                c = compressor.compress(delta, key=name)
            c.meta["kind"] = kind
            out[name] = c
        return out


def compress_delta(delta_state: Mapping[str, Tensor], policy: Mapping[str, Any] | None = None,
                   hessians: Mapping[str, Tensor] | None = None) -> dict[str, CompressedTensor]:
    """Compresses a delta state dict with the module-aware ``policy`` (see :class:`ModuleAwareCompressor`)."""
    return ModuleAwareCompressor(policy).compress(delta_state, hessians)


def decompress_state(compressed: Mapping[str, CompressedTensor]) -> dict[str, Tensor]:
    """Name -> dense float32 delta."""
    return {name: decompress(c) for name, c in compressed.items()}


def compression_report(delta_state: Mapping[str, Tensor], compressed: Mapping[str, CompressedTensor]) -> dict[str, Any]:
    """Bytes and relative error per module and in total; float32 dense is the reference size."""
    rows, dense_total, packed_total = {}, 0, 0
    for name, c in compressed.items():
        d = delta_state[name].float()
        err = (decompress(c) - d).norm() / d.norm().clamp_min(1e-30)
        dense, packed = d.numel() * 4, c.nbytes
        rows[name] = {"method": c.meta["method"], "dense_bytes": dense, "bytes": packed,
                      "ratio": dense / max(packed, 1), "rel_error": float(err)}
        dense_total += dense
        packed_total += packed
    return {"modules": rows, "dense_bytes": dense_total, "bytes": packed_total,
            "ratio": dense_total / max(packed_total, 1)}

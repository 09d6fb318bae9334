"""SkillPacks (GraftLLM): compressed, verifiable, unloadable parameter deltas.

Flow: ``compute_delta`` -> ``compress_delta`` (module-aware policy) -> ``save_pack`` / ``load_pack``
-> ``apply_packs_`` / ``unload_`` (or the ``applied`` context manager). See docs/METHODS.md §2.
Also here, imported from their modules: ``router`` (per-prompt top-1 pack choice), ``lora`` (LoRA
factors as a pack: the equal-size baseline), ``compressors`` (one file per compressor), ``report`` (storage-vs-quality tables and figures),
``gptq`` + ``calibration`` (GPTQ on SVD factors from layer-input Hessians), ``bitdelta`` (scale
distillation) and ``budget`` (each method's largest setting within a byte budget).
"""

from grafting.skillpack.apply import applied, apply_packs_, fuse_sum, unload_
from grafting.skillpack.compressors import (
    COMPRESSORS,
    CompressedTensor,
    Compressor,
    decompress,
    get_compressor,
    register,
)
from grafting.skillpack.delta import MODULE_KINDS, MODULE_PATTERNS, add_delta, compute_delta, module_kind
from grafting.skillpack.export import export_merged
from grafting.skillpack.merging import MERGERS, dare, task_arithmetic, ties
from grafting.skillpack.pack import (
    FingerprintMismatchError,
    PackExistsError,
    PackIntegrityError,
    SkillPack,
    load_pack,
    model_fingerprint,
    pack_nbytes,
    save_pack,
    state_fingerprint,
)
from grafting.skillpack.policy import DEFAULT_POLICY, ModuleAwareCompressor, compress_delta, decompress_state

__all__ = [
    "COMPRESSORS", "DEFAULT_POLICY", "MERGERS", "MODULE_KINDS", "MODULE_PATTERNS",
    "CompressedTensor", "Compressor", "FingerprintMismatchError", "ModuleAwareCompressor",
    "PackExistsError", "PackIntegrityError", "SkillPack",
    "add_delta", "applied", "apply_packs_", "compress_delta", "compute_delta", "dare", "decompress",
    "decompress_state", "export_merged", "fuse_sum", "get_compressor", "load_pack", "model_fingerprint",
    "module_kind", "pack_nbytes", "register", "save_pack", "state_fingerprint", "task_arithmetic", "ties",
    "unload_",
]

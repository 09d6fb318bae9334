"""The names each registry accepts, in one module that imports nothing (no torch).

A registry's implementation lives in a torch module (``grafting.graft.translators.TRANSLATORS`` maps these names
to classes); the config schema (:mod:`grafting.schema`) checks a config against the names before any model
is loaded, so ``python train.py <bad value>`` fails in about a second. Both read the tuple here: a plain
tuple registry *is* this tuple (``grafting.graft.losses.KINDS is names.LOSS_KINDS``), and a mapping registry is
checked against it when its module is imported (:func:`registry`), so the two cannot drift apart.

Registries that are already light are read from their own modules: ``grafting.stages.registry.STAGES``,
``grafting.stages.align_methods.names()``, ``grafting.data.modular.KINDS``, ``grafting.data.words.MODES``,
``grafting.data.skill_tasks.TASK_KINDS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

M = TypeVar("M", bound=Mapping)

TRANSLATORS = ("linear", "affine")  # grafting.graft.translators.TRANSLATORS
STRATEGIES = ("original", "direct")  # graft.strategy (grafting.stages.pipeline)
LOSS_KINDS = ("residual", "logits")  # grafting.graft.losses
DISTANCES = ("mse", "cosine", "kl")  # grafting.graft.losses.DISTANCES
READINGS = ("logit_lens", "hidden")  # grafting.graft.losses
SOLVERS = ("adam", "lstsq", "procrustes")  # grafting.graft.alignment
INITS = ("identity", "lstsq", "procrustes")  # grafting.graft.alignment (adam only: where its steps start)
LOADER_KINDS = ("mod", "text", "mixed")  # grafting.data.datamodule
CORPUS_SOURCES = ("builtin", "local", "fineweb")  # grafting.data.corpus
CORPUS_FORMATS = ("text", "json", "parquet", "csv", "arrow")  # datasets' packaged builders
FINETUNE_METHODS = ("lora", "full")  # grafting.modules.layer_finetune
MODEL_SOURCES = ("hub", "local", "random", "tiny_pretrained", "gguf_package")  # grafting.models.loading
MODEL_DTYPES = ("float32", "bfloat16", "float16")  # grafting.models.loading
DATA_PARTS = ("all", "dedup", "a", "b")  # grafting.models.pretrained_tiny
# grafting/skillpack/compressors/<name>.py, one file per compressor: listed, not imported (that needs torch)
COMPRESSORS = tuple(sorted(p.stem for p in (Path(__file__).parent / "skillpack" / "compressors").glob("*.py")
                           if p.stem not in ("__init__", "base")))
MODULE_KINDS = ("embedding", "lm_head", "attention", "mlp", "norm", "other")  # grafting.skillpack.delta
POLICY_KEYS = (*MODULE_KINDS, "vector")  # grafting.skillpack.policy
MERGERS = ("task_arithmetic", "ties", "dare")  # grafting.skillpack.merging.MERGERS
# grafting/skillpack/routers/<name>.py, one file per router (as the compressors)
ROUTERS = tuple(sorted(p.stem for p in (Path(__file__).parent / "skillpack" / "routers").glob("*.py")
                       if p.stem not in ("__init__", "base")))
BUDGET_FAMILIES = ("dense", "svd", "svd_quant", "graftllm", "graftllm_gptq", "magnitude", "dare",
                   "bitdelta")  # grafting.skillpack.budget.FAMILIES
PACK_DTYPES = ("float16", "bfloat16", "float32")  # grafting.skillpack.quant
SUPPORTED_BITS = (2, 3, 4, 8)  # grafting.skillpack.quant
FP16_BITS = 16  # grafting.skillpack.quant: keep these singular vectors unquantised, in float16
QUANTIZERS = ("rtn", "gptq")  # grafting.skillpack.compressors.svd_quant
SCORERS = ("abs_diff", "rel_diff")  # grafting.transplant.analysis.SCORERS
PAIRED_SCORERS = ("l1",)  # grafting.transplant.paired
TRANSPLANT_PAIRS = ("generation", "instruct")  # grafting.stages.transplant
TASK_METRICS = ("f_H", "f_S", "fact")  # grafting.transplant.report.TASK_KEYS


def registry(names: tuple[str, ...], mapping: M) -> M:
    """``mapping`` (a registry: name -> implementation), once its names are checked to be ``names``.

    Called where the registry is defined, so a name added to one and not the other fails at import.
    """
    if set(mapping) != set(names):
        raise RuntimeError(f"registry {sorted(mapping)} does not match its names in grafting/names.py: {sorted(names)}")
    return mapping


def registrar(mapping: dict, kind: str):
    """``register(name)``: a class decorator adding a class to ``mapping`` under ``name`` (and setting its
    ``name``); a second class under one name is an error naming the ``kind`` (e.g. "compressor")."""

    def register(name: str):
        def wrap(cls):
            if name in mapping:
                raise ValueError(f"{kind} {name!r} is already registered")
            cls.name = name
            mapping[name] = cls
            return cls

        return wrap

    return register

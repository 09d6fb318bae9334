"""The typed Python API: every step of the three methods as a plain call, no Hydra config.

A notebook session, step by step (see ``examples/graft_in_python.py``)::

    from grafting import api

    host, donor, tok = api.load_pair("tiny-host", "tiny-vanilla")
    task = api.ModularAddition()
    tuned = api.finetune_block(donor, 2, api.task_data(task, tok, 32, seed=0))
    grafted = api.build_graft(host, donor, layer=2, block=tuned.tuned_block())
    api.align(grafted, host, donor, api.build_datamodule(api.DataSpec(), task, tok, seed=0))
    scores = api.evaluate({"Grafted": grafted, "Host": host}, tok, host, task)

Model specs are dicts (a preset as plain data) or the name of a preset shipped in ``grafting/presets/models``.
The stages (``grafting/stages``) are thin adapters from the Hydra config to these calls.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from grafting import presets
from grafting.artifacts import MANIFEST, model_fingerprint
from grafting.data.corpus import TextSource
from grafting.data.datamodule import DataSpec, build_datamodule
from grafting.data.modular import ModularAddition
from grafting.errors import ConfigError
from grafting.evaluation.language_eval import LanguageSettings
from grafting.evaluation.suite import EvalSettings, evaluate_models
from grafting.graft.alignment import AlignConfig, align_graft, load_translators_, save_translators
from grafting.graft.distillation import DistillConfig, distill_translators
from grafting.graft.finetuning import (
    FinetuneConfig,
    finetune_block,
    finetune_or_resume,
    lora_rank_for,
    task_data,
)
from grafting.graft.grafted import build_grafted, graft_of, load_graft_, span_of, swap_donor_block_
from grafting.graft.grafted import save_graft as save_graft_with_manifest
from grafting.graft.translators import AffineTranslator
from grafting.graft.tuned_block import load_tuned_block, save_tuned_block
from grafting.models.loading import load_model, same_tokenizer
from grafting.plain import plain_dict
from grafting.pretraining import ensure_pretrained
from grafting.skillpack import applied, compress_delta, compute_delta, export_merged, load_pack, save_pack
from grafting.skillpack.pack import SkillPack
from grafting.training import Fit, plain_fit
from grafting.transplant import (
    candidate_modules,
    rank_modules,
    record_activations,
    recovery,
    score_modules,
    select,
    tir,
    transplanted,
)

__all__ = [
    "AlignConfig", "DataSpec", "DistillConfig", "EvalSettings", "FinetuneConfig", "Fit", "LanguageSettings",
    "ModularAddition", "Pair", "TextSource", "align", "apply_skillpacks", "build_datamodule", "build_graft",
    "build_skillpack", "distill_translators", "evaluate", "export_merged", "finetune_block", "finetune_or_resume",
    "graft_of", "load_graft", "load_model", "load_pair", "load_skillpack", "load_translators_", "load_tuned_block",
    "lora_rank_for", "model_spec", "plain_fit", "save_graft", "save_graft_with_manifest", "save_skillpack",
    "save_translators", "save_tuned_block", "swap_donor_block_", "task_data", "transplant_sweep",
]

align = align_graft
evaluate = evaluate_models


class Pair(NamedTuple):
    host: torch.nn.Module
    donor: torch.nn.Module
    tokenizer: Any


def model_spec(name: str, role: str = "donor") -> dict[str, Any]:
    """The shipped preset ``grafting/presets/models/<name>.yaml`` as it fills ``role`` (host or donor),
    as a plain dict with the tiny pair's recipe filled in."""
    from omegaconf import OmegaConf

    root = OmegaConf.create({"tiny": presets.tiny_recipe(), "model": presets.raw_preset(name, role)})
    return plain_dict(root.model)


def _spec(model: str | Mapping[str, Any], role: str) -> dict[str, Any]:
    return model_spec(model, role) if isinstance(model, str) else dict(model)


def load_pair(host: str | Mapping[str, Any], donor: str | Mapping[str, Any],
              cache_dir: str | Path | None = None) -> Pair:
    """Host, donor and their shared tokenizer; a tiny pretrained preset that is missing is pretrained first."""
    models = {}
    for key, spec in (("host", _spec(host, "host")), ("donor", _spec(donor, "donor"))):
        if spec.get("source") == "tiny_pretrained":
            ensure_pretrained(spec, cache_dir)
        models[key] = load_model(spec, key, cache_dir)
    (host_model, host_tok), (donor_model, donor_tok) = models["host"], models["donor"]
    if not same_tokenizer(donor_tok, host_tok):
        raise ConfigError("host", "host and donor use different tokenizers; grafting compares them on the same tokens.")
    return Pair(host_model, donor_model, donor_tok)


def build_graft(host: torch.nn.Module, donor: torch.nn.Module, layer: int, dest: int | None = None,
                translator: str = "linear", block: torch.nn.Module | None = None, span: int = 1) -> torch.nn.Module:
    """A copy of ``host`` with donor block ``layer`` (or ``block``) between identity translators at ``dest``.

    ``dest`` defaults to ``layer`` (the same depth); ``span`` > 1 grafts donor blocks ``layer..layer+span-1``.
    """
    return build_grafted(host, donor, layer, layer if dest is None else dest, translator, block=block, span=span)


def _translator_kind(grafted: torch.nn.Module) -> str:
    return "affine" if isinstance(graft_of(grafted)[1].pre_translator, AffineTranslator) else "linear"


def save_graft(grafted: torch.nn.Module, folder: str | Path, overwrite: bool = False) -> Path:
    """Save the graft (translators + donor block) with the spec :func:`load_graft` rebuilds it from."""
    dest, graft = graft_of(grafted)
    spec = {"layer": graft.layer, "dest": dest, "translator": _translator_kind(grafted), "span": span_of(graft)}
    return save_graft_with_manifest(grafted, folder, {"graft": spec}, overwrite=overwrite)


def load_graft(host: torch.nn.Module, donor: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """Rebuild a graft saved by :func:`save_graft` (or by a stage) on ``host`` and ``donor``."""
    spec = json.loads((Path(folder) / MANIFEST).read_text()).get("graft") or {}
    if "layer" not in spec:
        raise ConfigError("graft.layer", f"{folder}: the manifest does not say which donor block it holds.")
    grafted = build_grafted(host, donor, int(spec["layer"]), int(spec.get("dest", spec["layer"])),
                            str(spec.get("translator", "linear")), span=int(spec.get("span", 1)))
    load_graft_(grafted, folder)
    return grafted


def build_skillpack(base: torch.nn.Module, tuned: torch.nn.Module,
                    policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The compressed delta ``tuned - base`` (module-aware ``policy``; default: the project's)."""
    return compress_delta(compute_delta(base.state_dict(), tuned.state_dict()), policy)


def save_skillpack(pack: Mapping[str, Any] | SkillPack, base: torch.nn.Module, folder: str | Path,
                   overwrite: bool = False, metadata: Mapping[str, Any] | None = None) -> Path:
    """Save a pack with ``base``'s fingerprint, so it only ever applies to that base."""
    return save_pack(pack, model_fingerprint(base), folder, overwrite, metadata=metadata)


def load_skillpack(folder: str | Path, base: torch.nn.Module | None = None) -> SkillPack:
    """Load and verify a pack (with ``base``: its fingerprint must match)."""
    return load_pack(folder, model_fingerprint(base) if base is not None else None)


@contextlib.contextmanager
def apply_skillpacks(model: torch.nn.Module, packs: SkillPack | Sequence[SkillPack],
                     weights: Sequence[float] | None = None) -> Iterator[torch.nn.Module]:
    """``model`` with ``packs`` added inside the block, restored bit-exactly after it."""
    with applied(model, packs, weights) as patched:
        yield patched


def transplant_sweep(source: torch.nn.Module, target: torch.nn.Module, prompts: Sequence[str], tokenizer,
                     score: Callable[[torch.nn.Module], float], ks: Sequence[int],
                     selections: Sequence[str] = ("top", "random"), seeds: Sequence[int] = (0,),
                     alpha: float = 1.0, scorer: str = "abs_diff") -> list[dict[str, Any]]:
    """Rank modules by how differently ``source`` and ``target`` activate on ``prompts``, then for each
    selection, k and seed copy those modules from source into target (restored after) and score it.

    ``score(model)`` is the task score (e.g. accuracy); each row has ``score``, TIR and gap Recovery.
    """
    names = candidate_modules(source, target)  # matching leaf linears; no embeddings, norms or LM head
    ranked = rank_modules(score_modules(record_activations(source, list(prompts), names=names, tokenizer=tokenizer),
                                        record_activations(target, list(prompts), names=names, tokenizer=tokenizer),
                                        scorer))
    acc_target, acc_source = score(target), score(source)
    rows = []
    for selection in selections:
        for k in ks:
            for seed in (seeds if selection == "random" else (None,)):
                names = select(selection, ranked, k, seed=seed, strict=False)
                with transplanted(target, source, names, alpha):
                    acc = score(target)
                rows.append({"selection": selection, "k": k, "seed": seed, "modules": names, "score": acc,
                             "tir": tir(acc, acc_target).value,
                             "recovery": recovery(acc, acc_target, acc_source).value})
    return rows

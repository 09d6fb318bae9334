"""The grafted model: host blocks < j, then Pre-T -> donor block -> Post-T in place of host block j,
then host blocks > j.

``graft.dest = j`` (0-indexed) is the host position the graft occupies; ``graft.layer = i`` is the
donor block. Pre-T is trained to map the host's residual entering block j onto the donor's
residual entering block i; Post-T to map the graft's output onto the host's residual entering
block j+1. With donor == host, i == j and identity translators the grafted model *is* the host.

The result is the host's own transformers class with one block replaced, so ``generate`` and every
host utility keep working. Its ``save_pretrained`` writes the :mod:`grafting.graft.hf.modeling` format, which
``AutoModelForCausalLM.from_pretrained`` loads back as the same grafted model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedModel

from grafting import surgery
from grafting.artifacts import load_tensors_with_manifest, save_tensors_with_manifest
from grafting.errors import ArtifactError, ConfigError
from grafting.graft.block import GraftedBlock, SkippedBlock, graft_of, span_of
from grafting.graft.hf.modeling import save_as_hf_grafted_
from grafting.graft.translators import build_translator

__all__ = ["GraftedBlock", "SkippedBlock", "build_grafted", "graft_of", "load_graft_", "save_graft", "span_of",
           "swap_donor_block_", "validate_graft"]


def validate_graft(host: nn.Module, donor: nn.Module, layer: int, dest: int, span: int = 1) -> None:
    """Check a graft spec before any compute; errors name the config key. Host and donor may be of different
    families (the graft translates the host's block call into the donor's: grafting.surgery.call_block)."""
    for role, model in (("host", host), ("donor", donor)):
        try:
            surgery.architecture(model)
        except ValueError as err:
            raise ConfigError(role, str(err)) from err
    surgery.check_block_index(donor, layer, "graft.layer")
    surgery.check_block_index(host, dest, "graft.dest")
    if span < 1:
        raise ConfigError("graft.span", f"graft.span must be at least 1, got {span}.")
    for name, model, start, key in (("donor", donor, layer, "graft.layer"), ("host", host, dest, "graft.dest")):
        if start + span > surgery.num_blocks(model):
            raise ConfigError("graft.span", f"a span of {span} blocks from {key}={start} runs past the "
                                            f"{name}'s {surgery.num_blocks(model)} blocks.")


def build_grafted(
    host: PreTrainedModel,
    donor: PreTrainedModel,
    layer: int,
    dest: int,
    translator: str = "linear",
    block: nn.Module | None = None,
    span: int = 1,
) -> PreTrainedModel:
    """A copy of ``host`` whose block ``dest`` is replaced by a :class:`GraftedBlock`.

    Args:
        host: the host model (left untouched).
        donor: the model the block comes from (left untouched).
        layer: donor block index ``graft.layer``.
        dest: host position ``graft.dest``.
        translator: kind of Pre-T / Post-T (``graft.translator``).
        block: the block to graft; defaults to a copy of ``donor``'s block ``layer``.
        span: ``graft.span``: donor blocks ``layer..layer+span-1`` (``block`` first) replace host blocks
            ``dest..dest+span-1``; the host positions after ``dest`` pass the residual through.
    """
    validate_graft(host, donor, layer, dest, span)
    d_host, d_donor = surgery.hidden_size(host), surgery.hidden_size(donor)
    block = copy.deepcopy(block if block is not None else surgery.get_blocks(donor)[layer])
    surgery.set_attention_layer_idx_(block, dest)  # it takes host block j's KV-cache slot
    following = [copy.deepcopy(b) for b in surgery.get_blocks(donor)[layer + 1:layer + span]]
    for k, b in enumerate(following, start=1):
        surgery.set_attention_layer_idx_(b, dest + k)  # the KV-cache slot of the host block it covers
    rotary = surgery.rotary_embedding(donor)
    graft = GraftedBlock(
        block,
        build_translator(translator, d_host, d_donor),
        build_translator(translator, d_donor, d_host),
        copy.deepcopy(rotary) if rotary is not None else None,
        donor_config=copy.deepcopy(donor.config),
        layer=layer,
        following=following,
        host_family=surgery.architecture(host).family,
    )
    grafted = copy.deepcopy(host)
    surgery.swap_block_(grafted, dest, graft)
    for k in range(1, span):
        surgery.swap_block_(grafted, dest + k, SkippedBlock())
    save_as_hf_grafted_(grafted)
    grafted.eval()
    return grafted


def swap_donor_block_(grafted: nn.Module, block: nn.Module) -> nn.Module:
    """Replace the donor block inside the graft (strategy ``original``: vanilla -> tuned); return the old one."""
    dest, graft = graft_of(grafted)
    new = copy.deepcopy(block)
    surgery.set_attention_layer_idx_(new, dest)
    new.to(next(graft.block.parameters()).device)
    old, graft.block = graft.block, new
    return old


def save_graft(grafted: nn.Module, folder: str | Path, manifest: dict[str, Any], overwrite: bool = False) -> Path:
    """Save the graft (translators + donor block) as safetensors + manifest; the host is named, not copied."""
    dest, graft = graft_of(grafted)
    tensors = {k: v for k, v in graft.state_dict().items() if not k.startswith("rotary.")}
    manifest = dict(manifest, kind="graft", dest=dest, span=span_of(graft))
    return save_tensors_with_manifest(folder, tensors, manifest, overwrite=overwrite)


def load_graft_(grafted: nn.Module, folder: str | Path) -> dict[str, Any]:
    """Load saved graft weights into a freshly built grafted model (same host, donor and spec)."""
    tensors, manifest = load_tensors_with_manifest(folder)
    if manifest.get("kind") != "graft":
        raise ArtifactError(f"{folder} is not a saved graft (manifest kind={manifest.get('kind')!r}).")
    dest, graft = graft_of(grafted)
    if manifest["dest"] != dest:
        raise ArtifactError(f"{folder} was saved for graft.dest={manifest['dest']}, the model has {dest}.")
    if int(manifest.get("span", 1)) != span_of(graft):
        raise ArtifactError(f"{folder} was saved for graft.span={manifest.get('span', 1)}, the model has {span_of(graft)}.")
    missing, unexpected = graft.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith("rotary.")]
    if missing or unexpected:
        raise ArtifactError(f"{folder}: graft weights do not fit (missing={missing}, unexpected={unexpected}).")
    return manifest

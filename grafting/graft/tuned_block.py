"""A fine-tuned donor block on disk (safetensors + manifest), beside the graft's own I/O in grafted.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from grafting import surgery
from grafting.artifacts import load_tensors_with_manifest, model_fingerprint, save_tensors_with_manifest
from grafting.errors import ArtifactError


def save_tuned_block(block: torch.nn.Module, folder: str | Path, *, layer: int, method: str,
                     base: torch.nn.Module | None = None, donor: dict[str, Any] | None = None,
                     finetune: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Save block ``layer`` tuned by ``method``; with ``base`` the manifest fingerprints the donor's weights.

    ``donor`` and ``finetune`` (plain dicts: the donor's spec and the recipe) are recorded for the reader.
    """
    manifest = {"kind": "tuned_block", "layer": layer, "method": method,
                "base_fingerprint": model_fingerprint(base) if base is not None else None,
                "donor": donor, "finetune": finetune}
    return save_tensors_with_manifest(folder, block.state_dict(), manifest, overwrite=overwrite)


def load_tuned_block(folder: str | Path, donor: torch.nn.Module, layer: int) -> torch.nn.Module:
    """The donor's block ``layer`` with the weights saved by :func:`save_tuned_block`.

    Every file's sha256 is checked first, and the manifest's layer and donor fingerprint must match.
    """
    tensors, manifest = load_tensors_with_manifest(folder)
    if manifest.get("kind") != "tuned_block" or manifest.get("layer") != layer:
        raise ArtifactError(f"{folder}: expected a tuned block of layer {layer}, manifest says "
                            f"kind={manifest.get('kind')!r} layer={manifest.get('layer')!r}.")
    expected = manifest.get("base_fingerprint")
    if expected is not None and expected != model_fingerprint(donor):
        raise ArtifactError(f"{Path(folder) / 'manifest.json'}: this tuned block was trained on another donor "
                            f"(base_fingerprint {expected[:12]}… does not match the loaded donor).")
    block = copy.deepcopy(surgery.get_blocks(donor)[layer])
    block.load_state_dict(tensors)
    return block


def with_block(model: torch.nn.Module, layer: int, block: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` (in eval mode) whose block ``layer`` is ``block``: the tuned donor."""
    tuned = copy.deepcopy(model)
    surgery.get_blocks(tuned)[layer] = block
    return tuned.eval()

"""Tuned blocks on disk: verified before use (sha256, layer, donor fingerprint) and shared through the cache."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config, run_job, tiny_model

from grafting import surgery
from grafting.errors import ArtifactError
from grafting.graft.tuned_block import load_tuned_block, save_tuned_block
from grafting.modules.layer_finetune import LayerFinetuneModule
from grafting.stages import common

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def saved(tmp_path):
    """A tuned block of layer 1 (one SGD step away from the donor's), saved with its donor's fingerprint."""
    donor = tiny_model()
    module = LayerFinetuneModule(donor, layer=1, method="full", lr=1e-2)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.01)
    folder = save_tuned_block(module.tuned_block(), tmp_path / "tuned_block", layer=1, method="full", base=donor,
                              donor={"name": "tiny"}, finetune={"method": "full"})
    return donor, module, folder


def test_round_trip_equals_the_trained_block(saved):
    donor, module, folder = saved
    block = load_tuned_block(folder, donor, 1)
    expected = module.tuned_block().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in block.state_dict().items())
    original = surgery.get_blocks(donor)[1].state_dict()
    assert any(not torch.equal(v, original[k]) for k, v in block.state_dict().items())


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_weights_name_the_file(saved, damage):
    donor, _, folder = saved
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"weights\.safetensors is corrupt"):
        load_tuned_block(folder, donor, 1)


def test_other_donor_is_refused(saved):
    _, _, folder = saved
    with pytest.raises(ArtifactError, match=r"manifest\.json.*another donor"):
        load_tuned_block(folder, tiny_model(seed=1), 1)


def test_wrong_layer_is_refused(saved):
    donor, _, folder = saved
    with pytest.raises(ArtifactError, match="expected a tuned block of layer 0"):
        load_tuned_block(folder, donor, 0)


def test_finetune_cache_is_reused_across_runs(tmp_path):
    """Two jobs with finetune.cache=true and the same seed: the second reads the first's block, trains nothing."""
    runs = [run_job(["stage=finetune", "debug=smoke", "finetune.cache=true", f"paths.cache_dir={tmp_path / 'cache'}"],
                    tmp_path / name) for name in ("a", "b")]
    assert (runs[0] / "checkpoints" / "finetune").is_dir()
    assert not (runs[1] / "checkpoints" / "finetune").exists(), "the second job fine-tuned again"
    cached = [p for p in (tmp_path / "cache" / "tuned_blocks").iterdir() if not p.name.startswith(".")]  # not the lock
    assert len(cached) == 1
    a, b = (json.loads((r / "tuned_block" / "manifest.json").read_text())["files"] for r in runs)
    assert a == b  # same sha256: the same bytes
    scores = [json.loads((r / "results.json").read_text())["models"]["Tuned"] for r in runs]
    assert scores[0] == scores[1]


def test_cache_key_changes_with_the_code_version(tmp_path, monkeypatch):
    """A change of TUNED_BLOCK_VERSION (bumped when the fine-tuning code changes) misses every old entry."""
    cfg = compose_config(["debug=smoke", "finetune.cache=true"], tmp_path)
    ctx = SimpleNamespace(cfg=cfg, cache_dir=tmp_path / "cache")
    donor = tiny_model()
    key = common.tuned_block_cache_path(ctx, donor)
    assert key.parent == tmp_path / "cache" / "tuned_blocks" and common.tuned_block_cache_path(ctx, donor) == key
    monkeypatch.setattr(common, "TUNED_BLOCK_VERSION", common.TUNED_BLOCK_VERSION + 1)
    assert common.tuned_block_cache_path(ctx, donor) != key
    monkeypatch.undo()
    cfg.finetune.lr = 2 * cfg.finetune.lr  # and so does any setting that shapes training
    assert common.tuned_block_cache_path(ctx, donor) != key

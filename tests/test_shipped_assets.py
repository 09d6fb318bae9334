"""The models shipped in grafting/assets: intact, used by the default config, and a shared-init pair."""

import shutil

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from grafting.errors import ArtifactError
from grafting.models import shipped
from grafting.models.loading import build_random
from grafting.models.pretrained_tiny import locate, recipe

PAIR = ("tiny-vanilla", "tiny-host")


@pytest.mark.parametrize("name", [*PAIR, "tiny-mlm"])
def test_every_shipped_file_matches_its_manifest_sha256(name):
    manifest = shipped.verify(name)
    assert "python train.py stage=pretrain" in manifest["command"]
    assert set(manifest["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}


@pytest.mark.parametrize("name", PAIR)
def test_the_shipped_pair_is_well_trained(name):
    heldout = shipped.manifest(name)["heldout"]
    assert heldout["heldout_ppl"] <= 60 < heldout["random_init_heldout_ppl"]


def test_the_mlm_scorer_reports_its_accuracy():
    assert 0.1 < shipped.manifest("tiny-mlm")["heldout"]["heldout_masked_accuracy"] <= 1  # chance: 1/4096


def test_vanilla_and_host_share_their_initialisation_and_differ_in_data(tmp_path):
    vanilla, host = (shipped.manifest(n)["recipe"] for n in PAIR)
    indep = recipe(OmegaConf.to_container(compose_config(["host=tiny-host-indep"], tmp_path).host, resolve=True))
    assert vanilla["init_seed"] == host["init_seed"] != indep["init_seed"]
    assert vanilla["data_part"] != host["data_part"] == indep["data_part"]
    assert {k: v for k, v in host.items() if k != "init_seed"} == {k: v for k, v in indep.items() if k != "init_seed"}
    init = {name: build_random(r["arch"], r["init_seed"]).state_dict()
            for name, r in (("vanilla", vanilla), ("host", host), ("indep", indep))}
    assert all(torch.equal(init["vanilla"][k], init["host"][k]) for k in init["vanilla"])
    assert not all(torch.equal(init["vanilla"][k], init["indep"][k]) for k in init["vanilla"])


@pytest.mark.parametrize("key,name", [("donor", "tiny-vanilla"), ("host", "tiny-host")])
def test_the_default_config_loads_the_shipped_weights_without_pretraining(tmp_path, key, name):
    spec = OmegaConf.to_container(compose_config([], tmp_path)[key], resolve=True)
    assert recipe(spec) == shipped.manifest(name)["recipe"]
    assert locate(spec, tmp_path / "empty-cache") == shipped.asset_dir(name)


def test_a_damaged_asset_is_refused(tmp_path, monkeypatch):
    shutil.copytree(shipped.asset_dir("tiny-host"), tmp_path / "tiny-host")
    monkeypatch.setattr(shipped, "ASSETS", tmp_path)
    weights = tmp_path / "tiny-host" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.safetensors is corrupt"):
        shipped.verify("tiny-host")

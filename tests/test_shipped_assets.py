"""The models shipped in grafting/assets: intact, used by the default config, and a shared-init pair; the
transplant stage's predecessor, successor and instruct: intact and loaded by the default config untrained."""

import shutil

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from grafting.errors import ArtifactError
from grafting.models import shipped
from grafting.models.loading import build_random
from grafting.models.pretrained_tiny import locate, recipe
from grafting.pretraining import transplant_pair
from grafting.pretraining.transplant_pair import SHIPPED, role_path, role_recipe
from grafting.stages.transplant import recipe_from_config

PAIR = ("tiny-vanilla", "tiny-host")
# The hosts of the initialisation x width 2 x 2 and the 2x host (docs/BEYOND_THE_PAPER.md); each ships once pretrained.
HOSTS = tuple(n for n in ("tiny-host-indep", "tiny-host-m-shared", "tiny-host-m", "tiny-host-l") if shipped.manifest(n))
# Other families pretrained like tiny-vanilla (the cross-family grafts, docs/GRAFT_ACROSS_MODELS.md).
FAMILIES = tuple(n for n in ("tiny-llama", "tiny-gpt2") if shipped.manifest(n))


@pytest.mark.parametrize("name", [*PAIR, "tiny-mlm", *HOSTS, *FAMILIES])
def test_every_shipped_file_matches_its_manifest_sha256(name):
    manifest = shipped.verify(name)
    assert "python train.py stage=pretrain" in manifest["command"]
    assert set(manifest["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}


@pytest.mark.parametrize("name", [*PAIR, *HOSTS])
def test_the_shipped_pair_is_well_trained(name):
    heldout = shipped.manifest(name)["heldout"]
    assert heldout["heldout_ppl"] <= 60 < heldout["random_init_heldout_ppl"]


@pytest.mark.parametrize("name", FAMILIES)
def test_another_family_is_as_well_trained_as_the_pair_and_shares_only_the_data(name):
    """Held-out perplexity within 10% of tiny-vanilla's; its own architecture and initialisation, the
    vanilla donor's data."""
    own, vanilla = shipped.manifest(name), shipped.manifest("tiny-vanilla")
    assert own["heldout"]["heldout_ppl"] <= 1.1 * vanilla["heldout"]["heldout_ppl"]
    assert own["recipe"]["arch"]["model_type"] != vanilla["recipe"]["arch"]["model_type"]
    assert own["recipe"]["init_seed"] != vanilla["recipe"]["init_seed"]
    assert (own["recipe"]["data_part"], own["recipe"]["data_seed"]) == (vanilla["recipe"]["data_part"],
                                                                        vanilla["recipe"]["data_seed"])


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


@pytest.mark.parametrize("key,name", [("donor", "tiny-vanilla"), ("host", "tiny-host"), *(("host", h) for h in HOSTS),
                                      *(("donor", f) for f in FAMILIES)])
def test_the_default_config_loads_the_shipped_weights_without_pretraining(tmp_path, key, name):
    spec = OmegaConf.to_container(compose_config([f"{key}={name}"], tmp_path)[key], resolve=True)
    assert recipe(spec) == shipped.manifest(name)["recipe"]
    assert locate(spec, tmp_path / "empty-cache") == shipped.asset_dir(name)


def test_the_wider_shared_init_host_contains_the_vanilla_initialisation(tmp_path):
    """tiny-host-m-shared's initialisation holds tiny-vanilla's in its leading slice; tiny-host-m's does not."""
    specs = {h: OmegaConf.to_container(compose_config([f"host={h}"], tmp_path).host, resolve=True)
             for h in ("tiny-host-m-shared", "tiny-host-m")}
    shared, indep = recipe(specs["tiny-host-m-shared"]), recipe(specs["tiny-host-m"])
    vanilla = shipped.manifest("tiny-vanilla")["recipe"]
    assert shared["shared_init"] == {"arch": vanilla["arch"], "init_seed": vanilla["init_seed"]}
    assert {k: v for k, v in shared.items() if k != "shared_init"} == indep  # all else equal
    assert shared["arch"]["hidden_size"] == indep["arch"]["hidden_size"] == vanilla["arch"]["hidden_size"] * 3 // 2
    from grafting import surgery

    small = build_random(vanilla["arch"], vanilla["init_seed"])
    wide = surgery.embed_narrow_(build_random(shared["arch"], shared["init_seed"]), small)
    other = build_random(indep["arch"], indep["init_seed"])
    name = "gpt_neox.layers.0.attention.query_key_value.weight"
    cut = tuple(slice(0, n) for n in small.state_dict()[name].shape)
    assert torch.equal(wide.state_dict()[name][cut], small.state_dict()[name])
    assert not torch.equal(other.state_dict()[name][cut], small.state_dict()[name])


def test_a_damaged_asset_is_refused(tmp_path, monkeypatch):
    shutil.copytree(shipped.asset_dir("tiny-host"), tmp_path / "tiny-host")
    monkeypatch.setattr(shipped, "ASSETS", tmp_path)
    weights = tmp_path / "tiny-host" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.safetensors is corrupt"):
        shipped.verify("tiny-host")


TRANSPLANT = tuple(SHIPPED.values())


@pytest.mark.parametrize("name", TRANSPLANT)
def test_every_shipped_transplant_file_matches_its_manifest_sha256(name):
    manifest = shipped.verify(name)
    assert "python -m grafting.pretraining.transplant_pair --ship" in manifest["command"]
    assert set(manifest["files"]) >= {"config.json", "model.safetensors", "tokenizer.json", "train_report.json"}
    assert manifest["role"] == manifest["recipe"]["role"] and "scores" in manifest


@pytest.mark.parametrize("role", SHIPPED)
def test_the_default_transplant_config_loads_the_shipped_models_without_training(tmp_path, monkeypatch, role):
    pair_recipe = recipe_from_config(compose_config(["stage=transplant"], tmp_path))
    assert role_recipe(pair_recipe, role) == shipped.manifest(SHIPPED[role])["recipe"]
    assert shipped.manifest(SHIPPED[role])["key"] == pair_recipe.key(role)
    monkeypatch.setattr(transplant_pair, "train_role", lambda *a, **k: pytest.fail(f"{role} would be trained"))
    empty = tmp_path / "empty-cache"
    assert transplant_pair.locate_role(pair_recipe, role, empty) == shipped.asset_dir(SHIPPED[role])
    model, _ = transplant_pair.load_role(pair_recipe, role, empty)
    assert sum(p.numel() for p in model.parameters()) > 0 and not empty.exists()


def test_a_changed_transplant_recipe_does_not_use_the_shipped_models(tmp_path):
    pair_recipe = recipe_from_config(compose_config(["stage=transplant", "transplant.models.instruct.steps=7"],
                                                    tmp_path))
    assert transplant_pair.locate_role(pair_recipe, "predecessor", tmp_path) == shipped.asset_dir(SHIPPED["predecessor"])
    assert transplant_pair.locate_role(pair_recipe, "instruct", tmp_path) == role_path(pair_recipe, "instruct", tmp_path)


def test_a_damaged_transplant_model_is_refused(tmp_path, monkeypatch):
    name = SHIPPED["predecessor"]
    shutil.copytree(shipped.asset_dir(name), tmp_path / name)
    monkeypatch.setattr(shipped, "ASSETS", tmp_path)
    weights = tmp_path / name / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    pair_recipe = recipe_from_config(compose_config(["stage=transplant"], tmp_path / "cfg"))
    with pytest.raises(ArtifactError, match="model.safetensors is corrupt"):
        transplant_pair.load_role(pair_recipe, "predecessor", tmp_path / "empty-cache")

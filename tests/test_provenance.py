"""Provenance: versions, git commit and dirty flag, device; recorded in results.json and the loggers' hyperparams."""

import importlib.metadata
import json
import subprocess

import torch
import yaml
from conftest import compose_config

from grafting.provenance import PACKAGES, REPO, code_identity, git_state, provenance
from grafting.run_context import RunContext


def _git(*args, cwd):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_versions_device_and_config(tmp_path):
    cfg = compose_config(["debug=smoke", "seed=7"], tmp_path)
    prov = provenance(cfg)
    assert {k: prov["versions"][k] for k in PACKAGES} == {k: importlib.metadata.version(k) for k in PACKAGES}
    assert prov["versions"]["python"].count(".") == 2
    assert prov["device"]["type"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert prov["device"]["dtype"] == "float32" and prov["device"]["threads"] == torch.get_num_threads()
    assert prov["config"]["seed"] == 7 and prov["config"]["paths"]["output_dir"] == str(tmp_path / "run")
    assert "config" not in provenance()


def test_git_state_of_this_checkout_a_fresh_repo_and_no_repo(tmp_path):
    if (REPO / ".git").exists():
        assert git_state()["commit"] == _git("rev-parse", "HEAD", cwd=REPO)
    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # not a checkout: no crash, no commit
    _git("init", "-q", cwd=tmp_path)
    (tmp_path / "a.py").write_text("x = 1\n")
    _git("add", "a.py", cwd=tmp_path)
    _git("commit", "-qm", "one", cwd=tmp_path)
    assert git_state(tmp_path) == {"commit": _git("rev-parse", "HEAD", cwd=tmp_path), "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
    (tmp_path / "sub").mkdir()  # a folder inside someone's checkout (site-packages in a repo) is not ours
    assert git_state(tmp_path / "sub") == {"commit": None, "dirty": None}


def test_code_identity_names_commit_dirty_and_versions():
    prov = {"git": {"commit": "abc", "dirty": False}, "versions": {"torch": "2.13.0", "python": "3.11.7"},
            "device": {"type": "cpu"}}
    assert code_identity(prov) == {"git.commit": "abc", "git.dirty": False, "versions.python": "3.11.7",
                                   "versions.torch": "2.13.0"}
    assert code_identity(None) == {"git.commit": None, "git.dirty": None}


def test_results_json_and_logger_hyperparams_hold_provenance(tmp_path):
    cfg = compose_config(["debug=smoke", "logger=csv"], tmp_path)
    ctx = RunContext.from_config(cfg)
    path = ctx.save_results({"stage": "test", "models": {}})
    ctx.finish()
    results = json.loads(path.read_text())
    assert results["provenance"]["versions"]["transformers"] == importlib.metadata.version("transformers")
    assert set(results["provenance"]["git"]) == {"commit", "dirty"}
    assert results["provenance"]["device"]["threads"] == torch.get_num_threads()
    assert results["config"]["finetune"]["steps"] == cfg.finetune.steps
    hparams = yaml.safe_load((tmp_path / "run" / "csv" / "hparams.yaml").read_text())
    assert hparams["provenance"]["versions"]["torch"] == torch.__version__ and hparams["seed"] == cfg.seed

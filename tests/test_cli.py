"""Jobs as a user types them (2-layer random models, a few steps): in this process through Hydra's compose
API, and once end to end (``-m e2e``): ``python train.py`` then ``python evaluate.py`` on its run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_in_terminal, run_job

from grafting.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _results(folder: Path) -> dict:
    found = sorted(folder.rglob("results.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def test_finetune_smoke(tmp_path):
    run_dir = run_job(["stage=finetune", "debug=smoke"], tmp_path)
    assert set(_results(run_dir)["models"]) == {"Tuned", "Vanilla"}
    assert (next(run_dir.rglob("tuned_block")) / "manifest.json").is_file()


BAR = re.compile(r"\d+%\||\d(?:it/s|s/it)|━")  # tqdm's "40%|", its rate, and rich's bar glyph


@pytest.mark.e2e
def test_train_py_then_evaluate_py_end_to_end(tmp_path):
    """The one subprocess run of each entry point: the main job's tables (in a terminal, under CI: no progress
    bar anywhere), then its re-evaluation."""
    env = {**{k: v for k, v in os.environ.items() if k != "GRAFTING_PROGRESS"}, "WANDB_MODE": "disabled", "CI": "true"}
    rc, out = run_in_terminal([sys.executable, "train.py", f"paths.log_dir={tmp_path}", "debug=smoke"], env)
    assert rc == 0, out[-3000:]
    assert "Table 1: modular addition" in out and "Table 2: language generation" in out
    assert not BAR.search(out), BAR.search(out)
    results = _results(tmp_path)
    assert list(results["models"]) == ["Tuned", "Grafted", "VanillaGraft", "IdentityGraft", "Vanilla", "Host"]
    for scores in results["models"].values():
        assert {"f_H", "f_S", "fact", "P", "kl_host"} <= set(scores)
    prov = results["provenance"]  # the main job says what produced it
    assert prov["versions"]["torch"] == torch.__version__ and set(prov["git"]) == {"commit", "dirty"}
    assert prov["device"]["type"] in ("cpu", "cuda") and results["config"]["graft"]["layer"] == 1
    run_dir = next(tmp_path.rglob("results.json")).parent
    assert (run_dir / "results.md").is_file() and (run_dir / "graft" / "manifest.json").is_file()

    # evaluate.py rebuilds the models from the saved artifacts and reproduces the numbers
    proc = subprocess.run([sys.executable, "evaluate.py", f"run_dir={run_dir}", f"paths.log_dir={tmp_path / 'ev'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluation = json.loads(next((tmp_path / "ev").rglob("evaluation.json")).read_text())
    assert evaluation["max_abs_difference_vs_saved"] < 1e-6 and evaluation["settings_changed"] == {}
    assert not list(run_dir.glob("evaluation.*"))  # written to evaluate.py's own folder
    assert evaluation["models"]["Grafted"]["f_S"] == results["models"]["Grafted"]["f_S"]


def test_hub_model_offline_fails_with_a_clear_message(tmp_path):
    with pytest.raises(ConfigError, match=r"\[host\.id\].*pythia-160m-random"):
        run_job(["host=pythia-160m", "stage=finetune"], tmp_path)
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").rglob("*.safetensors"))


def test_finished_run_is_not_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"keep": true}')
    with pytest.raises(Exception, match="overwrite=true"):
        run_job(["stage=finetune", "debug=smoke"], tmp_path)
    assert json.loads((run_dir / "results.json").read_text()) == {"keep": True}


@pytest.mark.parametrize("bad,key", [("graft.layer=7", "graft.layer"), ("graft.strategy=sideways", "graft.strategy"),
                                     ("task.n=1", "task.n"), ("stage.name=bake", "stage")])
def test_bad_config_names_the_key(tmp_path, bad, key):
    with pytest.raises(ConfigError) as err:
        run_job(["debug=smoke", bad], tmp_path)
    # The error names the key ("[key]" or a key under it)
    assert err.value.key == key or err.value.key.startswith(f"{key}."), str(err.value)

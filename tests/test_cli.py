"""End-to-end runs of train.py as a user types them (2-layer random models, a few steps)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_train(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled")
    cmd = [sys.executable, "train.py", f"paths.log_dir={tmp_path}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _results(tmp_path: Path) -> dict:
    found = sorted(tmp_path.rglob("results.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def test_finetune_smoke(tmp_path):
    proc = run_train(["stage=finetune", "debug=smoke"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path)
    assert set(results["models"]) == {"Tuned", "Vanilla"}
    assert (next(tmp_path.rglob("tuned_block")) / "manifest.json").is_file()


def test_pipeline_smoke_prints_tables(tmp_path):
    proc = run_train(["debug=smoke"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Table 1: modular addition" in proc.stdout and "Table 2: language generation" in proc.stdout
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
    env = dict(os.environ, WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, "evaluate.py", f"run_dir={run_dir}", f"paths.log_dir={tmp_path / 'ev'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluation = json.loads(next((tmp_path / "ev").rglob("evaluation.json")).read_text())
    assert evaluation["max_abs_difference_vs_saved"] < 1e-6 and evaluation["settings_changed"] == {}
    assert not list(run_dir.glob("evaluation.*"))  # written to evaluate.py's own folder
    assert evaluation["models"]["Grafted"]["f_S"] == results["models"]["Grafted"]["f_S"]


def test_hub_model_offline_fails_fast_with_a_clear_message(tmp_path):
    start = time.perf_counter()
    proc = run_train(["host=pythia-160m", "stage=finetune"], tmp_path, timeout=120)
    assert proc.returncode != 0
    assert time.perf_counter() - start < 30
    assert "[host.id]" in proc.stderr and "pythia-160m-random" in proc.stderr


def test_finished_run_is_not_overwritten(tmp_path):
    run_dir = tmp_path / "done"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"keep": true}')
    proc = run_train(["stage=finetune", "debug=smoke", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode != 0 and "overwrite=true" in proc.stderr
    assert json.loads((run_dir / "results.json").read_text()) == {"keep": True}


@pytest.mark.parametrize("bad,key", [("graft.layer=7", "graft.layer"), ("graft.strategy=sideways", "graft.strategy"),
                                     ("task.n=1", "task.n"), ("stage.name=bake", "stage")])
def test_bad_config_names_the_key(tmp_path, bad, key):
    proc = run_train(["debug=smoke", bad], tmp_path, timeout=120)
    assert proc.returncode != 0
    # The error names the key ("[key]" or a key under it); "key=" alone would match Hydra echoing the override.
    assert re.search(rf"ConfigError: \[{re.escape(key)}(\.[\w.]+)?\]", proc.stderr), proc.stderr[-2000:]

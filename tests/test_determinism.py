"""The same command gives the same numbers whatever the cache held (issue: cold vs warm cache)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Pretrained tiny pair at smoke size (a few steps): the first run pretrains it in-process, the second loads it.
ARGS = ["debug=smoke", "host=tiny-host", "donor=tiny-vanilla", "evaluation.language.mlm_model=null"]


def _run(tmp_path: Path, cache: Path, name: str) -> dict:
    env = dict(os.environ, WANDB_MODE="disabled", GRAFTING_CACHE_DIR=str(cache))
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "train.py", *ARGS, f"hydra.run.dir={out}", f"paths.cache_dir={cache}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def _metrics(results: dict) -> dict:
    return {name: {k: v for k, v in scores.items() if isinstance(v, float | int)}
            for name, scores in results["models"].items()}


def test_cold_and_warm_cache_give_identical_metrics(tmp_path):
    cache = tmp_path / "cache"
    cold = _run(tmp_path, cache, "cold")
    assert list((cache / "pretrained").iterdir()), "the first run should have pretrained the pair in-process"
    warm = _run(tmp_path, cache, "warm")
    assert _metrics(cold) == _metrics(warm)
    assert cold["models"]["Tuned"]["samples"] == warm["models"]["Tuned"]["samples"]

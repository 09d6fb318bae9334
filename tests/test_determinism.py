"""The same command gives the same numbers whatever the cache held (issue: cold vs warm cache)."""

import json
from pathlib import Path

from conftest import run_job

# Pretrained tiny pair at smoke size (a few steps): the first run pretrains it in-process, the second loads it.
ARGS = ["debug=smoke", "host=tiny-host", "donor=tiny-vanilla", "evaluation.language.mlm_model=null"]


def _run(tmp_path: Path, cache: Path, name: str, monkeypatch) -> dict:
    monkeypatch.setenv("GRAFTING_CACHE_DIR", str(cache))
    run_dir = run_job([*ARGS, f"paths.cache_dir={cache}"], tmp_path / name)
    return json.loads((run_dir / "results.json").read_text())


def _metrics(results: dict) -> dict:
    return {name: {k: v for k, v in scores.items() if isinstance(v, float | int)}
            for name, scores in results["models"].items()}


def test_cold_and_warm_cache_give_identical_metrics(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cold = _run(tmp_path, cache, "cold", monkeypatch)
    assert list((cache / "pretrained").iterdir()), "the first run should have pretrained the pair in-process"
    warm = _run(tmp_path, cache, "warm", monkeypatch)
    assert _metrics(cold) == _metrics(warm)
    assert cold["models"]["Tuned"]["samples"] == warm["models"]["Tuned"]["samples"]

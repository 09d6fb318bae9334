"""docs/skillpacks/make_results.py: fills only its marked blocks and refuses a seed found twice."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from grafting.metrics.stats import INTERVAL_METHOD, seed_item_interval

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "docs/skillpacks/make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job(folder: Path, seed: int, gain: float) -> None:
    row = {"method": "svd", "budget": 0.01, "pct_gain": gain, "pct_dense": 0.9, "bytes": 10}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "stage": "skillpack", "budgets": {"reverse": [row]},
        "base": {"reverse": {"score": 0.0}}, "full": {"reverse": {"score": 1.0}},
        "source": {"reverse": {"score": 1.0}}, "wall_seconds": 60.0,
        "config": {"run_name": "skillpack_budgets", "seed": seed, "host": {"name": "h"}, "donor": {"name": "d"}}}))


def test_only_the_marked_block_is_replaced(tmp_path):
    make_results = _module()
    text = "before\n<!-- budgets:start -->\nold\n<!-- budgets:end -->\nafter\n"
    out = make_results.replace_block(text, "budgets", "new table", tmp_path / "r.md")
    assert out.startswith("before\n") and out.endswith("after\n")
    assert "new table" in out and "old" not in out
    with pytest.raises(SystemExit, match="hetero:start"):
        make_results.replace_block(text, "hetero", "x", tmp_path / "r.md")


def test_tables_are_means_over_seeds_and_a_seed_twice_is_refused(tmp_path):
    make_results = _module()
    _job(tmp_path / "runs/s0/0", 0, 20.0)
    _job(tmp_path / "runs/s1/0", 1, 40.0)
    jobs = make_results._jobs(tmp_path / "runs", "skillpack_budgets")
    md = make_results.budgets_markdown(jobs, tmp_path / "runs", tmp_path)
    mean, low, high = seed_item_interval([20.0, 40.0])  # rows without a score: the spread over seeds alone
    assert f"30.0 [{low:.1f}, {high:.1f}], 0.9% (n=2)" in md
    assert INTERVAL_METHOD in md  # the document names its interval
    assert (tmp_path / "budget_curves.png").exists()
    _job(tmp_path / "runs/again/0", 1, 50.0)
    with pytest.raises(SystemExit, match="two finished jobs"):
        make_results._seeds(make_results._jobs(tmp_path / "runs", "skillpack_budgets"))

"""Stage ``transplant``: the K sweep end to end (smoke), and the report's handling of undefined metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config

from grafting.errors import ConfigError
from grafting.stages.transplant import FIGURE, check_config
from grafting.transplant.report import (
    format_cell,
    record,
    summarize,
    summary_rows,
    sweep_markdown,
    top_vs_random,
)

ROOT = Path(__file__).resolve().parents[1]


def test_transplant_smoke_end_to_end(tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled")
    cmd = [sys.executable, "train.py", f"paths.log_dir={tmp_path}", "stage=transplant", "debug=smoke"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Recovery (f_H)" in proc.stdout and "TIR (f_H)" in proc.stdout
    [found] = list(tmp_path.rglob("results.json"))
    run_dir, results = found.parent, json.loads(found.read_text())
    assert (run_dir / FIGURE).stat().st_size > 0 and (run_dir / "results.md").is_file()
    assert (run_dir / "source" / "config.json").is_file()

    ks = results["config"]["transplant"]["k_list"]
    seeds = results["config"]["transplant"]["control_seeds"]
    rows = {(r["selection"], r["k"]): r for r in results["summary"]}
    n_candidates = results["meta"]["n_candidates"]
    for k in ks:
        for selection in ("top", "random", "bottom"):
            row = rows[(selection, k)]
            assert row["k_effective"] == min(k, n_candidates)  # capped, not an error
            for metric in ("tir", "recovery"):  # a number, or no number and the reason why
                assert (row[metric]["mean"] is None) == (row[metric]["reason"] is not None)
        assert rows[("random", k)]["seeds"] == seeds
    assert rows[("all", n_candidates)]["k_effective"] == n_candidates
    # Identical module sets give identical numbers: at K >= #candidates every selection is "all".
    capped = [k for k in ks if k >= n_candidates]
    for k in capped:
        assert rows[("top", k)]["score"] == rows[("all", n_candidates)]["score"]
    assert len(results["runs"]) == len(ks) * (2 + len(seeds)) + 1


def _records(target: dict, source: dict, top: dict, randoms: list[dict]) -> list[dict]:
    recs = [record("top", 4, 4, 1.0, None, ["a"], top, 0.1, target, source)]
    recs += [record("random", 4, 4, 1.0, s, ["b"], sc, 0.2, target, source) for s, sc in enumerate(randoms)]
    recs.append(record("bottom", 4, 4, 1.0, None, ["c"], target, 0.05, target, source))
    recs.append(record("all", 8, 8, 1.0, None, ["a", "b"], source, 0.3, target, source))
    return recs


def _scores(v: float) -> dict[str, float]:
    return {"f_H": v, "f_S": v, "fact": v}


def test_zero_gap_and_zero_target_are_reported_not_divided():
    target = source = _scores(0.0)  # same score (zero gap), and the target scores 0 (zero target)
    recs = _records(target, source, _scores(0.5), [_scores(0.0), _scores(0.25)])
    rows = summary_rows(recs, "f_H")
    for row in rows:
        assert row["recovery"] == {"mean": None, "std": None, "n": 0, "reason": "zero gap"}
        assert row["tir"]["mean"] is None and row["tir"]["reason"] == "zero target"
    md = sweep_markdown(rows, "f_H", target, source, {"n_candidates": 8, "ranked": ["a", "b"]})
    assert "— (zero gap)" in md and "— (zero target)" in md
    assert "nan" not in md and "inf" not in md


def test_summary_means_over_seeds_and_defined_metrics():
    target, source = _scores(0.2), _scores(0.6)
    recs = _records(target, source, _scores(0.6), [_scores(0.2), _scores(0.4)])
    rows = {(r["selection"], r["k"]): r for r in summary_rows(recs, "f_H")}
    assert rows[("top", 4)]["recovery"]["mean"] == pytest.approx(1.0)
    assert rows[("top", 4)]["tir"]["mean"] == pytest.approx(3.0)
    rnd = rows[("random", 4)]
    assert rnd["n_runs"] == 2 and rnd["seeds"] == [0, 1]
    assert rnd["recovery"]["mean"] == pytest.approx(0.25) and rnd["recovery"]["std"] == pytest.approx(0.3536, 1e-3)
    assert rows[("bottom", 4)]["recovery"]["mean"] == 0.0
    assert top_vs_random(list(rows.values()), 1.0) == {"above": [4], "equal": [], "below": []}
    assert format_cell(rnd["recovery"]) == "0.250 ± 0.354"


def test_summarize_keeps_partial_reasons():
    assert summarize([None, None], ["zero gap", "zero gap"])["reason"] == "zero gap"
    part = summarize([1.0, None], [None, "zero gap"])
    assert part["mean"] == 1.0 and part["n"] == 1 and "1 of 2 undefined" in part["reason"]


@pytest.mark.parametrize("override,key", [("transplant.metric=acc", "transplant.metric"),
                                          ("transplant.score=cosine", "transplant.score"),
                                          ("transplant.k_list=[0,2]", "transplant.k_list"),
                                          ("transplant.alphas=[1.5]", "transplant.alphas"),
                                          ("transplant.eval_points=5000", "transplant.eval_points"),
                                          ("transplant.source=nowhere", "transplant.source")])
def test_bad_transplant_config_names_the_key(tmp_path, override, key):
    cfg = compose_config(["stage=transplant", override], tmp_path)
    with pytest.raises(ConfigError, match=rf"\[{key}\]"):
        check_config(cfg)

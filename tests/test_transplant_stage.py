"""Stage ``transplant``: the K sweep end to end (smoke), and the report's handling of undefined metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_config, run_job

from grafting.errors import ConfigError
from grafting.metrics.stats import seed_item_interval
from grafting.stages.transplant import FIGURE, check_config
from grafting.transplant.figure import plot_sweep
from grafting.transplant.report import (
    format_cell,
    record,
    summarize,
    summary_rows,
    sweep_markdown,
    top_vs_random,
)

ROOT = Path(__file__).resolve().parents[1]


SMOKE_MODELS = ["transplant.models.arch.num_hidden_layers=2", "transplant.models.pretrain.steps=3",
                "transplant.models.successor.steps=3", "transplant.models.instruct.steps=3",
                "transplant.models.instruct.word_examples=8", "transplant.models.pretrain.fact_repeats=1",
                "transplant.models.successor.fact_repeats=1", "transplant.models.task.n_keys=16",
                "transplant.n_analysis_prompts=16", "transplant.eval_points=16", "transplant.k_list=[1,2,16]",
                "transplant.control_seeds=[0,1]", "transplant.blend_alphas=[0.5]"]


def _run(tmp_path, overrides: list[str], capsys) -> tuple[Path, dict, str]:
    """``python train.py stage=transplant debug=smoke <overrides>``, in this process; its run folder, results, stdout."""
    run_dir = run_job(["stage=transplant", "debug=smoke", f"paths.cache_dir={tmp_path / 'cache'}", *overrides], tmp_path)
    return run_dir, json.loads((run_dir / "results.json").read_text()), capsys.readouterr().out


def _check_rows(results: dict) -> None:
    ks = results["config"]["transplant"]["k_list"]
    seeds = results["config"]["transplant"]["control_seeds"]
    scorers = results["config"]["transplant"]["scorers"]
    rows = {(r["selection"], r["scorer"], r["k"]): r for r in results["summary"]}
    n_candidates = results["meta"]["n_candidates"]
    for k in ks:
        for selection, scorer in [("random", None)] + [(s, c) for s in ("top", "bottom") for c in scorers]:
            row = rows[(selection, scorer, k)]
            assert row["k_effective"] == min(k, n_candidates)  # capped, not an error
            for metric in ("tir", "recovery"):  # a number, or no number and the reason why
                assert (row[metric]["mean"] is None) == (row[metric]["reason"] is not None)
        assert rows[("random", None, k)]["seeds"] == seeds
    assert rows[("all", None, n_candidates)]["k_effective"] == n_candidates
    # Identical module sets give identical numbers: at K >= #candidates every selection is "all".
    for k in (k for k in ks if k >= n_candidates):
        assert rows[("top", scorers[0], k)]["score"] == rows[("all", None, n_candidates)]["score"]
    blends = results["config"]["transplant"]["blend_alphas"]
    assert len(results["runs"]) == len(ks) * (2 * len(scorers) + len(seeds)) + 1 + len(blends)


@pytest.mark.slow
def test_transplant_pair_smoke_end_to_end(tmp_path, capsys):
    """The default path: tiny Llama predecessor / successor trained for a few steps, every scorer."""
    run_dir, results, stdout = _run(tmp_path, SMOKE_MODELS, capsys)
    assert "Recovery (fact)" in stdout and "TIR (fact)" in stdout
    assert (run_dir / FIGURE).stat().st_size > 0 and (run_dir / "results.md").is_file()
    assert results["meta"]["n_candidates"] == 2 * 7  # llama: q, k, v, o, gate, up, down per block
    _check_rows(results)


@pytest.mark.slow
def test_transplant_legacy_smoke_end_to_end(tmp_path, capsys):
    """pair=null: the host (the target) and its SFT copy (2-layer random GPTNeoX), one scorer."""
    run_dir, results, stdout = _run(tmp_path, ["transplant.pair=null", "transplant.metric=f_H",
                                               "transplant.scorers=[abs_diff]", "transplant.eval_points=16",
                                               "transplant.k_list=[1,2,16]", "transplant.control_seeds=[0,1]",
                                               "transplant.blend_alphas=[]", "transplant.n_analysis_prompts=8"], capsys)
    assert "Recovery (f_H)" in stdout
    assert (run_dir / "source" / "config.json").is_file()
    _check_rows(results)


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
        assert row["recovery"] == {"mean": None, "std": None, "low": None, "high": None, "n": 0,
                                   "reason": "zero gap"}
        assert row["tir"]["mean"] is None and row["tir"]["reason"] == "zero target"
    md = sweep_markdown(rows, "f_H", target, source, {"n_candidates": 8, "ranked": {"abs_diff": ["a", "b"]}})
    assert "— (zero gap)" in md and "— (zero target)" in md
    assert "nan" not in md and "inf" not in md


def test_figure_draws_panels_without_a_defined_value(tmp_path):
    target = source = _scores(0.0)  # TIR and Recovery undefined everywhere: empty panels on a log-K axis
    rows = summary_rows(_records(target, source, _scores(0.5), [_scores(0.0), _scores(0.25)]), "f_H")
    path = plot_sweep(rows, "f_H", tmp_path / "fig.png")
    assert path.stat().st_size > 0


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
    # two draws: the t-interval at 1 degree of freedom is wide, so top-K's 1.0 lies inside it
    assert top_vs_random(list(rows.values()), 1.0) == {"above": [], "inside": [4], "below": []}
    assert format_cell(rnd["recovery"]) == "0.250 ± 0.354"
    low, high = seed_item_interval([0.0, 0.5])[1:]  # the reference: the project's interval (no items given)
    assert (rnd["recovery"]["low"], rnd["recovery"]["high"]) == pytest.approx((low, high), abs=1e-12)
    assert format_cell(rnd["recovery"], interval=True) == f"0.250 [{low:.3f}, {high:.3f}]"


def test_summary_intervals_count_the_test_items():
    """With the test points known, a score every draw agrees on still has the width its items allow."""
    target, source = _scores(0.25), _scores(1.0)
    recs = _records(target, source, _scores(0.5), [_scores(0.25)] * 10)
    rows = {(r["selection"], r["k"]): r for r in summary_rows(recs, "fact", n_items=64, kl_items=8,
                                                              target=target, source=source)}
    rnd = rows[("random", 4)]
    assert rnd["score"]["mean"] == 0.25 and rnd["score"]["low"] < 0.2 and rnd["score"]["high"] > 0.3
    expected = seed_item_interval([0.25] * 10, 64, proportion=True)
    assert (rnd["fact"]["low"], rnd["fact"]["high"]) == pytest.approx(expected[1:])
    # TIR = score / target and Recovery = (score - target) / gap carry the score's item noise, scaled
    assert rnd["tir"]["high"] - rnd["tir"]["mean"] == pytest.approx((rnd["score"]["high"] - 0.25) / 0.25, rel=0.2)
    assert rnd["recovery"]["low"] < 0 < rnd["recovery"]["high"]
    # KL: the records carry no per-text variance here, so only the spread over draws counts (none)
    assert rnd["kl"]["low"] == pytest.approx(0.2) and rnd["kl"]["high"] == pytest.approx(0.2)


def test_top_inside_or_below_the_random_interval_is_not_a_win():
    target, source = _scores(0.2), _scores(1.0)
    randoms = [_scores(v) for v in (0.3, 0.5, 0.4, 0.6, 0.5)]
    for top, verdict in ((0.45, "inside"), (0.1, "below"), (0.9, "above")):
        rows = summary_rows(_records(target, source, _scores(top), randoms), "fact")
        got = top_vs_random(rows, 1.0)
        assert got[verdict] == [4] and sum(len(v) for v in got.values()) == 1, (top, got)


def test_summarize_keeps_partial_reasons():
    assert summarize([None, None], ["zero gap", "zero gap"])["reason"] == "zero gap"
    part = summarize([1.0, None], [None, "zero gap"])
    assert part["mean"] == 1.0 and part["n"] == 1 and "1 of 2 undefined" in part["reason"]


@pytest.mark.parametrize("override,key", [("transplant.metric=acc", "transplant.metric"),
                                          ("transplant.blend_alphas=[2]", "transplant.blend_alphas"),
                                          ("transplant.scorers=[cosine]", "transplant.scorers"),
                                          ("transplant.pair=nope", "transplant.pair"),
                                          ("transplant.k_list=[0,2]", "transplant.k_list"),
                                          ("transplant.alphas=[1.5]", "transplant.alphas"),
                                          ("transplant.eval_points=5000", "transplant.eval_points"),
                                          ("transplant.source=nowhere", "transplant.source"),
                                          ("transplant.source=host", "transplant.source")])
def test_bad_transplant_config_names_the_key(tmp_path, override, key):
    cfg = compose_config(["stage=transplant", "transplant.pair=null", override], tmp_path)
    with pytest.raises(ConfigError, match=rf"\[{key}\]"):
        check_config(cfg)


def test_pair_null_takes_the_target_from_host_and_the_source_from_donor(tmp_path):
    """One meaning everywhere: the host receives (the target), the donor gives (the source)."""
    from types import SimpleNamespace

    import torch

    from grafting.models.loading import load_model
    from grafting.stages.transplant import load_models

    cfg = compose_config(["stage=transplant", "transplant.pair=null", "transplant.source=donor", "debug=smoke"],
                         tmp_path)
    ctx = SimpleNamespace(cfg=cfg, cache_dir=tmp_path / "cache")
    models = load_models(ctx)
    host, _ = load_model(cfg.host, "host", ctx.cache_dir)
    donor, _ = load_model(cfg.donor, "donor", ctx.cache_dir)
    first = next(iter(host.state_dict()))
    assert not torch.equal(host.state_dict()[first], donor.state_dict()[first])  # two different models
    assert torch.equal(models["target"].state_dict()[first], host.state_dict()[first])
    assert torch.equal(models["source"].state_dict()[first], donor.state_dict()[first])

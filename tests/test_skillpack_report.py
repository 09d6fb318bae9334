"""Storage-vs-quality rows, tables and the figure."""

from __future__ import annotations

import math

import pytest

from grafting.metrics.stats import seed_item_interval
from grafting.skillpack.report import gain_kept, score_table, storage_figure, storage_markdown, storage_row


def test_gain_kept_is_the_share_of_the_fine_tunes_gain():
    assert gain_kept(0.55, base=0.1, full=1.0) == pytest.approx(50.0)
    assert gain_kept(0.1, base=0.1, full=1.0) == 0.0 and gain_kept(1.0, base=0.1, full=1.0) == 100.0
    assert math.isnan(gain_kept(0.5, base=0.3, full=0.3))  # fine-tuning gained nothing: no ratio


def test_rows_table_and_figure(tmp_path):
    rows = [storage_row("dense", 1000, 1000, 0.9, 0.1, 0.9), storage_row("graftllm", 40, 1000, 0.88, 0.1, 0.9),
            storage_row("magnitude", 90, 1000, 0.1, 0.1, 0.9)]
    assert rows[1]["pct_dense"] == 4.0 and rows[1]["pct_gain"] == pytest.approx(97.5)
    md = storage_markdown(rows, 0.1, 0.9, "T")
    lines = [line for line in md.splitlines() if line.startswith("| ") and "method" not in line]
    assert [line.split(" | ")[0] for line in lines] == ["| graftllm", "| magnitude", "| dense"]  # by size
    assert "| 4.00 |" in md and "97.5" in md
    assert "| a | 0.500 | nan |" in score_table({"a": {"x": 0.5}}, ["x", "y"], "S")
    png = storage_figure({"task": rows}, tmp_path / "f.png", "title")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_budget_summary_counts_the_test_items_of_each_score():
    from grafting.skillpack.report import summarize_budgets

    def row(score, gain):
        return {"method": "lora", "budget": 0.01, "bytes": 1, "pct_dense": 1.0, "pct_gain": gain, "score": score,
                "n": 300}

    runs = [{"reverse": [row(0.9, 90.0)]}, {"reverse": [row(0.9, 90.0)]}, {"reverse": [row(0.9, 90.0)]}]
    refs = [{"reverse": (0.0, 1.0)}] * 3
    seeds_only = summarize_budgets(runs)[0]["gain"]
    assert seeds_only[1] == seeds_only[2] == 90.0  # the seeds agree: no spread without the items
    mean, low, high = summarize_budgets(runs, refs)[0]["gain"]
    half = 1.96 * 100 * (0.9 * 0.1 * 300 / 299 / 300) ** 0.5  # the score's binomial SE on 300 prompts, x 100
    assert mean == pytest.approx(90.0) and high - mean == pytest.approx(half, rel=0.02) and low < 90.0


def test_a_retained_gain_where_every_item_agrees_still_has_the_exact_intervals_width():
    """All 300 prompts right in all seeds: zero item variance, but the exact interval of 300/300 is [0.988, 1],
    so the gain (base 0.2, full 0.9) spans at least 100 (0.988 - 0.2) / 0.7 .. 100 (1 - 0.2) / 0.7."""
    from grafting.metrics.stats import clopper_pearson
    from grafting.skillpack.report import summarize_budgets

    gain = 100 * (1.0 - 0.2) / 0.7
    runs = [{"copy": [{"method": "svd", "budget": 0.05, "bytes": 1, "pct_dense": 1.0, "pct_gain": gain, "score": 1.0,
                       "n": 300}]}] * 3
    mean, low, high = summarize_budgets(runs, [{"copy": (0.2, 0.9)}] * 3)[0]["gain"]
    cp_low, cp_high = clopper_pearson(300, 300)
    assert mean == pytest.approx(gain) and cp_high == 1.0
    assert low == pytest.approx(100 * (cp_low - 0.2) / 0.7) and high == pytest.approx(gain) and low < mean


def test_budget_summary_means_intervals_and_misfits(tmp_path):
    from grafting.skillpack.report import budget_figure, budget_markdown, summarize_budgets, summary_markdown

    def row(method, budget, gain, nbytes):
        return {"task": "reverse", "method": method, "budget": budget, "bytes": nbytes,
                "pct_dense": float("nan") if nbytes is None else nbytes / 10, "pct_gain": gain}

    runs = [{"reverse": [row("svd", 0.02, 80.0, 15), row("bitdelta", 0.02, float("nan"), None)]},
            {"reverse": [row("svd", 0.02, 90.0, 15), row("bitdelta", 0.02, float("nan"), None)]}]
    summary = {(r["method"], r["budget"]): r for r in summarize_budgets(runs)}
    mean, low, high = summary[("svd", 0.02)]["gain"]
    assert (mean, low, high) == pytest.approx(seed_item_interval([80.0, 90.0]))  # the project's interval
    assert low < 80.0 and high > 90.0 and summary[("svd", 0.02)]["n"] == 2  # a t-interval at n = 2 is wide
    assert summary[("bitdelta", 0.02)]["fits"] == 0
    table = summary_markdown(list(summary.values()), "reverse")
    assert "| svd | 85.0 [" in table and "| bitdelta | does not fit |" in table
    assert "does not fit" in budget_markdown(runs[0]["reverse"], "t") and "80.0 (1.50%)" in budget_markdown(
        runs[0]["reverse"], "t")
    assert budget_figure({"reverse": list(summary.values())}, tmp_path / "f.png", "t").stat().st_size > 1000

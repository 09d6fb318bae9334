"""The one interval (grafting.metrics.stats): reference values, and coverage on simulated seed x item data."""

import math
import random

import pytest
import torch

from grafting.metrics.stats import (
    betainc,
    bootstrap_interval,
    clopper_pearson,
    format_interval,
    ratio_interval,
    score_interval,
    seed_item_interval,
    separated,
    share_interval,
    t_quantile,
)


def test_distributions_match_reference_values():
    # Student's t and the exact binomial bounds, against published table values.
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.975, 9) == pytest.approx(2.2622, abs=1e-4)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-4)  # 1 - sum_{k<2} Bin(4, .4)
    low, high = clopper_pearson(1000, 1000)
    assert low == pytest.approx(0.99631, abs=1e-5) and high == 1.0
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.18709, abs=1e-5) and high == pytest.approx(0.81291, abs=1e-5)


def test_interval_by_hand():
    # Two seeds of a non-proportion with item variances: mean ± t_df * sqrt(s_b^2/2 + mean(v/n)),
    # df by Welch-Satterthwaite from the seed term (1 df) and the item term (99 df).
    mean, low, high = seed_item_interval([1.0, 3.0], n_items=100, item_vars=[4.0, 16.0])
    seed_term, item_term = 2.0 / 2, (0.04 + 0.16) / 2
    se = math.sqrt(seed_term + item_term)
    df = se**4 / (seed_term**2 / 1 + item_term**2 / 99)
    assert mean == 2.0
    assert high - mean == pytest.approx(t_quantile(0.975, round(df, 1)) * se)
    assert mean - low == pytest.approx(high - mean)


def test_no_zero_width_over_a_finite_test_set():
    # Every seed and every item agree: the bootstrap has no width; the exact bound does.
    assert bootstrap_interval([1.0] * 5) == (1.0, 1.0, 1.0)
    mean, low, high = seed_item_interval([1.0] * 5, n_items=1000, proportion=True)
    assert mean == 1.0 and high == 1.0 and low == pytest.approx(0.9963, abs=1e-4)
    mean, low, high = seed_item_interval([0.0] * 10, n_items=64, proportion=True)
    assert low == 0.0 and high > 0.05
    # The same model scored again under every seed (e.g. the host): item noise alone sets the width.
    mean, low, high = seed_item_interval([50.0] * 5, n_items=100, item_vars=[400.0] * 5)
    assert low < 50.0 < high
    # With no item information the width comes from the seeds alone.
    assert seed_item_interval([0.3, 0.3]) == (0.3, 0.3, 0.3)


def test_nans_are_dropped_with_their_items_and_one_seed_counts_items_only():
    mean, low, high = seed_item_interval([0.5, math.nan], n_items=[100, 100], proportion=True)
    assert mean == 0.5 and 0.38 < low < 0.41 and 0.59 < high < 0.62
    assert all(math.isnan(x) for x in seed_item_interval([math.nan]))


def _simulate(mu, sd_seed, sd_item, seeds, items, gen):
    """One experiment: per-seed accuracies over one test set shared by the seeds (crossed design)."""
    seed_fx = torch.randn(seeds, 1, generator=gen, dtype=torch.float64) * sd_seed
    item_fx = torch.randn(1, items, generator=gen, dtype=torch.float64) * sd_item
    p = torch.sigmoid(mu + seed_fx + item_fx)
    return (torch.rand(p.shape, generator=gen, dtype=torch.float64) < p).double().mean(1).tolist()


def _truth(mu, sd_seed, sd_item, gen):
    z = torch.randn(2_000_000, generator=gen, dtype=torch.float64) * math.sqrt(sd_seed**2 + sd_item**2)
    return torch.sigmoid(mu + z).mean().item()


@pytest.mark.parametrize(("mu", "sd_seed", "sd_item", "seeds", "items"), [
    (0.5, 0.6, 1.0, 5, 1000),   # seed noise dominates (5 seeds, the old bootstrap is too narrow)
    (0.0, 0.05, 2.0, 5, 64),    # item noise dominates: 64 facts shared by every seed
    (7.0, 0.0, 0.0, 5, 1000),   # at the ceiling: seeds and items nearly always agree
    (0.0, 0.3, 1.0, 3, 200),    # three seeds
    (1.0, 0.4, 0.5, 10, 1000),  # ten seeds, both sources
])
def test_coverage_on_simulated_seed_by_item_data(mu, sd_seed, sd_item, seeds, items):
    gen = torch.Generator().manual_seed(0)
    truth = _truth(mu, sd_seed, sd_item, gen)
    reps, ours, old = 200, 0, 0
    for r in range(reps):
        means = _simulate(mu, sd_seed, sd_item, seeds, items, gen)
        _, lo, hi = seed_item_interval(means, n_items=items, proportion=True)
        ours += lo <= truth <= hi
        _, lo, hi = bootstrap_interval(means, resamples=2000, seed=r)
        old += lo <= truth <= hi
    assert ours / reps >= 0.90, f"the interval covers {ours / reps:.2f}"
    assert old / reps < 0.90, f"the seed-only bootstrap covers {old / reps:.2f}: the scenario tests nothing"


def test_ratio_interval_against_a_direct_computation():
    rng = random.Random(0)
    num = [0.5 + rng.gauss(0, 0.1) for _ in range(8)]
    den = [1.0 + rng.gauss(0, 0.05) for _ in range(8)]
    ratio, low, high = ratio_interval(num, den)
    assert ratio == pytest.approx(sum(num) / sum(den))
    assert low < ratio < high
    assert ratio_interval([0.5], [1.0])[0] == 0.5 and math.isnan(ratio_interval([0.5], [1.0])[1])
    # item noise widens it, and a share of identical seeds still has the width of its test items
    _, lo_items, hi_items = ratio_interval(num, den, item_var=[0.5] * 8, n_items=64)
    assert lo_items < low and hi_items > high
    share, lo, hi = share_interval([0.75] * 5, [0.25] * 5, [1.0] * 5, n_items=64)
    assert share == pytest.approx(2 / 3) and lo < share < hi and hi - lo > 0.1
    # every item agrees in every seed (0 of 300 for the model and the control): still the width of 300 items
    share, lo, hi = share_interval([0.0] * 3, [0.0] * 3, [1.0] * 3, n_items=300)
    assert share == 0.0 and lo < 0.0 < hi and 0.005 < hi - lo < 0.05


def test_separation_and_format():
    high = seed_item_interval([0.9, 1.0, 0.95, 1.0, 0.9], n_items=1000, proportion=True)
    low = seed_item_interval([0.0, 0.1, 0.0, 0.05, 0.0], n_items=1000, proportion=True)
    assert separated(high, low) and separated(low, high)
    assert not separated(high, seed_item_interval([0.0, 1.0, 1.0, 0.0, 1.0], n_items=1000, proportion=True))
    assert format_interval((0.5, 0.25, 0.75)) == "0.500 [0.250, 0.750]"
    assert format_interval((0.5, math.nan, math.nan)) == "0.500"
    assert format_interval((math.nan,) * 3) == "n/a"


def test_score_interval_reads_the_evaluation_layout():
    seeds = [{"f_H": 1.0, "n": 1000, "P": 5.0, "P_n": 100, "P_item_var": 4.0, "loss": 0.2},
             {"f_H": 1.0, "n": 1000, "P": 5.0, "P_n": 100, "P_item_var": 4.0, "loss": 0.2}]
    assert score_interval(seeds, "f_H") == seed_item_interval([1.0, 1.0], n_items=1000, proportion=True)
    assert score_interval(seeds, "f_H")[1] < 1.0
    assert score_interval(seeds, "P") == seed_item_interval([5.0, 5.0], n_items=100, item_vars=[4.0, 4.0])
    assert score_interval(seeds, "P")[1] < 5.0
    assert score_interval(seeds, "loss") == (0.2, 0.2, 0.2)  # no item data: seeds alone
    val = [{"val_fact": 0.5, "val_n": 100, "n": 1000}] * 3
    assert score_interval(val, "val_fact") == seed_item_interval([0.5] * 3, n_items=100, proportion=True)


def test_a_language_interval_stops_at_the_bound_its_metric_cannot_cross():
    """Two seeds far apart give a t-interval below 0; a KL cannot go there, the interval stops at 0."""
    seeds = [{"kl_host": 0.2, "kl_host_n": 100, "kl_host_item_var": 0.01},
             {"kl_host": 6.0, "kl_host_n": 100, "kl_host_item_var": 0.01}]
    mean, low, high = score_interval(seeds, "kl_host")
    assert mean == pytest.approx(3.1) and low == 0.0 and high > 6.0
    unbounded = score_interval([{"x": 0.2}, {"x": 6.0}], "x")  # a metric that may be negative keeps its t-interval
    assert unbounded[1] < 0

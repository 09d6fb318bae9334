"""Merging baselines against small examples worked out by hand."""

from __future__ import annotations

import pytest
import torch

from grafting.skillpack.merging import (
    MERGERS,
    dare,
    dare_delta,
    task_arithmetic,
    task_arithmetic_delta,
    ties,
    ties_delta,
    trim_top_k,
)


def test_task_arithmetic_by_hand() -> None:
    base = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([0.5])}
    t1 = {"w": torch.tensor([1.0, 0.0, -1.0]), "b": torch.tensor([2.0])}
    t2 = {"w": torch.tensor([0.5, 0.5, 0.5])}  # no "b": counts as zero
    merged = task_arithmetic(base, [t1, t2], lam=0.5)
    # w: [1,2,3] + 0.5*[1.5, 0.5, -0.5] = [1.75, 2.25, 2.75]; b: 0.5 + 0.5*2 = 1.5
    assert torch.equal(merged["w"], torch.tensor([1.75, 2.25, 2.75]))
    assert torch.equal(merged["b"], torch.tensor([1.5]))


def test_trim_top_k() -> None:
    assert torch.equal(trim_top_k(torch.tensor([1.0, -2.0, 3.0, 0.5]), 0.5), torch.tensor([0.0, -2.0, 3.0, 0.0]))


def test_ties_by_hand() -> None:
    t1 = {"w": torch.tensor([1.0, -2.0, 3.0, 0.5, 0.2, -0.1])}
    t2 = {"w": torch.tensor([-4.0, 1.0, 2.0, -0.1, -0.3, 5.0])}
    t3 = {"w": torch.tensor([0.1, -0.1, -6.0, 0.2, 0.0, 4.0])}
    # density 0.5 keeps 3 of 6 per task:
    #   t1 -> [1, -2, 3, 0, 0, 0]; t2 -> [-4, 0, 2, 0, 0, 5]; t3 -> [0, 0, -6, 0.2, 0, 4]
    # sums [-3, -2, -1, 0.2, 0, 9] -> signs [-, -, -, +, 0, +]
    # disjoint means: [-4 (t1's +1 disagrees), -2, -6 (only t3 agrees), 0.2, 0, (5+4)/2]
    expected = torch.tensor([-4.0, -2.0, -6.0, 0.2, 0.0, 4.5])
    assert torch.equal(ties_delta([t1, t2, t3], density=0.5)["w"], expected)
    base = {"w": torch.ones(6)}
    assert torch.equal(ties(base, [t1, t2, t3], density=0.5, lam=2.0)["w"], 1 + 2 * expected)


def test_ties_with_full_density_and_agreeing_signs_is_the_mean() -> None:
    a, b = torch.rand(4, 5) + 0.1, torch.rand(4, 5) + 0.1
    torch.testing.assert_close(ties_delta([{"x": a}, {"x": b}], density=1.0)["x"], (a + b) / 2)


def test_dare_merge_drops_and_rescales() -> None:
    t = {"w": torch.ones(100, 100)}
    merged = dare_delta([t, t], p=0.5, seed=0)["w"]
    # each entry is 0, 2 or 4 (one, or both, tasks kept it, rescaled by 2)
    assert set(merged.unique().tolist()) <= {0.0, 2.0, 4.0}
    assert abs(float(merged.mean()) - 2.0) < 0.1  # unbiased in expectation
    assert torch.equal(dare({"w": torch.zeros(100, 100)}, [t, t], p=0.5, seed=0)["w"], merged)
    assert not torch.equal(merged, dare_delta([t, t], p=0.5, seed=1)["w"])


def test_registry_and_errors() -> None:
    assert set(MERGERS) == {"task_arithmetic", "ties", "dare"}
    with pytest.raises(ValueError, match="at least one"):
        task_arithmetic_delta([])
    with pytest.raises(ValueError, match="shape of w"):
        task_arithmetic_delta([{"w": torch.ones(2)}, {"w": torch.ones(3)}])


def test_grid_lists_every_combination() -> None:
    from grafting.skillpack.merging import grid

    assert grid({"lam": [0.5, 1.0], "density": 0.2}) == [{"lam": 0.5, "density": 0.2}, {"lam": 1.0, "density": 0.2}]
    assert len(grid({"lam": [0.3, 0.6, 1.0], "density": [0.1, 0.2]})) == 6 and grid({}) == [{}]


def test_ties_equals_peft_on_a_sign_tie() -> None:
    # a zero-sum entry: peft elects "+" (our own earlier TIES elected nothing and gave 0)
    merged = ties_delta([{"w": torch.tensor([2.0, 1.0])}, {"w": torch.tensor([-2.0, 1.0])}], density=1.0)["w"]
    assert torch.equal(merged, torch.tensor([2.0, 1.0]))


def test_emr_by_hand() -> None:
    """Two tasks, one tensor of four entries, computed by hand from the EMR paper's three steps."""
    from grafting.skillpack.merging import emr_task_deltas

    t1 = {"w": torch.tensor([1.0, -2.0, 3.0, 0.5])}
    t2 = {"w": torch.tensor([2.0, 1.0, -1.0, -0.5])}
    # elect: sign(Σ) = [+, -, +, 0]; the largest |τ| of each sign's agreeing tasks: [2, 2, 3, 0]
    unified = torch.tensor([2.0, -2.0, 3.0, 0.0])
    m1, m2 = torch.tensor([1.0, 1.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 0.0])
    scale1 = (1 + 2 + 3 + 0.5) / (2 + 2 + 3)  # Σ|τ_1| / Σ|M_1 ⊙ τ_uni|
    scale2 = (2 + 1 + 1 + 0.5) / 2
    r1, r2 = emr_task_deltas([t1, t2])
    torch.testing.assert_close(r1["w"], scale1 * m1 * unified)
    torch.testing.assert_close(r2["w"], scale2 * m2 * unified)


def test_emr_of_one_task_is_that_task_and_keys_missing_count_as_zero() -> None:
    from grafting.skillpack.merging import emr_task_deltas

    gen = torch.Generator().manual_seed(0)
    only = {"a": torch.randn(3, 4, generator=gen), "b": torch.randn(5, generator=gen)}
    (alone,) = emr_task_deltas([only])
    for k in only:
        torch.testing.assert_close(alone[k], only[k])
    other = {"a": torch.randn(3, 4, generator=gen)}  # no "b": a zero delta there
    first, second = emr_task_deltas([only, other])
    assert torch.count_nonzero(second["b"]) == 0
    # each rebuilt delta keeps its task's total magnitude (the scale's purpose)
    for rebuilt, task in ((first, only), (second, other)):
        assert sum(float(v.abs().sum()) for v in rebuilt.values()) == pytest.approx(
            sum(float(v.abs().sum()) for v in task.values()), rel=1e-5)

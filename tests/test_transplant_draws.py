"""Top-K against single random draws of K modules (issue 25, item 8)."""

from __future__ import annotations

from collections import Counter

import pytest

from grafting.transplant import select
from grafting.transplant.draws import (
    matched_draws,
    module_kind,
    module_layer,
    placement,
    random_draws,
    top_k_against_draws,
)
from grafting.transplant.report import P_SHOWN, draws_markdown, scorer_verdicts

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NAMES = [f"model.layers.{layer}.{'mlp' if kind in KINDS[4:] else 'self_attn'}.{kind}"
         for layer in range(10) for kind in KINDS]


def test_layer_and_kind_of_a_module_name():
    assert module_layer("model.layers.9.mlp.down_proj") == 9 and module_kind("model.layers.9.mlp.down_proj") == "down_proj"
    assert module_layer("gpt_neox.layers.12.attention.dense") == 12
    assert module_layer("transformer.h.3.attn.c_attn") == 3
    with pytest.raises(ValueError, match="no block index"):
        module_layer("lm_head")


def test_random_draws_are_the_sweeps_random_k_controls():
    ranked = list(reversed(NAMES))  # any order: the draw depends on the candidate set and the seed only
    draws = random_draws(ranked, 4, 12)
    assert len(draws) == 12 and len({frozenset(d) for d in draws}) == 12
    for seed, draw in enumerate(draws):
        assert draw == select("random", ranked, 4, seed=seed)
    assert random_draws(NAMES, 99, 2)[0] and len(random_draws(NAMES, 99, 2)[0]) == len(NAMES)  # capped at N


@pytest.mark.parametrize("match,key", [("layer", module_layer), ("kind", module_kind)])
def test_matched_draws_keep_top_ks_count_per_layer_or_kind(match, key):
    top = ["model.layers.9.mlp.down_proj", "model.layers.9.self_attn.o_proj", "model.layers.6.self_attn.k_proj",
           "model.layers.0.mlp.down_proj"]
    draws = matched_draws(NAMES, top, match, 50)
    want = Counter(key(n) for n in top)
    for draw in draws:
        assert len(set(draw)) == len(top) and set(draw) <= set(NAMES)
        assert Counter(key(n) for n in draw) == want
    assert len({frozenset(d) for d in draws}) > 25  # the rest is random
    other = "kind" if match == "layer" else "layer"
    other_key = module_kind if other == "kind" else module_layer
    assert any(Counter(other_key(n) for n in d) != Counter(other_key(n) for n in top) for d in draws)
    assert draws == matched_draws(list(reversed(NAMES)), top, match, 50)  # reproducible, order-free
    with pytest.raises(ValueError, match="match must be"):
        matched_draws(NAMES, top, "size", 2)


def test_placement_counts_ties_against_top_k():
    p = placement(0.5, [0.1, 0.5, 0.9, 0.2])
    assert (p["below"], p["equal"], p["above"], p["n"]) == (2, 1, 1, 4)
    assert p["percentile"] == pytest.approx(62.5)
    assert p["p_at_least"] == pytest.approx(3 / 5) and p["p_at_most"] == pytest.approx(4 / 5)
    best = placement(1.0, [0.0] * 99)
    assert best["p_at_least"] == pytest.approx(0.01) and best["percentile"] == 100.0
    assert placement(0.0, [0.0] * 99)["p_at_least"] == 1.0  # all tied: nothing shown
    assert placement(1.0, [0.0] * 10)["p_at_least"] > P_SHOWN  # 10 draws can never show it
    with pytest.raises(ValueError):
        placement(0.5, [])


def test_top_k_against_draws_and_the_verdict():
    """A score that counts layer-9 modules: top-K (all in layer 9) beats plain draws, not layer-matched ones."""
    def score(names: list[str]) -> float:
        return sum(module_layer(n) == 9 for n in names) / len(names)

    ranked = {"l1": sorted(NAMES, key=lambda n: (module_layer(n) != 9, n)), "flat": list(NAMES)}
    calls = []

    def counted(names: list[str]) -> float:
        calls.append(frozenset(names))
        return score(names)

    rows = top_k_against_draws(counted, ranked, [2, 4, 70], n_random=100, n_matched=40)
    assert {(r["k"], r["scorer"]) for r in rows} == {(2, "l1"), (2, "flat"), (4, "l1"), (4, "flat")}  # K = N skipped
    top4 = next(r for r in rows if r["k"] == 4 and r["scorer"] == "l1")
    assert top4["top"] == 1.0 and top4["placement"]["random"]["p_at_least"] <= P_SHOWN
    assert top4["placement"]["layer"]["p_at_least"] == 1.0  # every layer-matched draw is in layer 9 too
    assert len(top4["draws"]["random"]) == 100 and len(top4["draws"]["kind"]) == 40
    verdicts = {v["scorer"]: v for v in scorer_verdicts([], 1.0, ["l1", "flat"], 70, rows)}
    assert verdicts["l1"]["ks_beating_random"] == [2, 4] and verdicts["l1"]["smallest_k"] == 2
    assert verdicts["l1"]["ks_beating_layer"] == [] and verdicts["l1"]["n_draws_random"] == 100
    assert verdicts["flat"]["ks_beating_random"] == []  # the first modules by name are in layer 0
    md = "\n".join(draws_markdown(rows, "fact", ["l1", "flat"]))
    assert "top (l1) vs random" in md and "top (flat) vs layer" in md and "100 single random draws" in md

"""docs/make_transplant.py: fills TRANSPLANT.md's marked blocks from the jobs, one per pair."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from grafting.transplant.draws import top_k_against_draws
from grafting.transplant.report import record, summary_rows

ROOT = Path(__file__).resolve().parents[1]
NAMES = [f"model.layers.{i}.mlp.down_proj" for i in range(6)]


def _module():
    spec = importlib.util.spec_from_file_location("make_transplant", ROOT / "docs/make_transplant.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job(folder: Path, pair: str) -> None:
    target, source = {"f_H": 1.0, "f_S": 1.0, "fact": 0.5}, {"f_H": 1.0, "f_S": 1.0, "fact": 1.0}

    def score(names: list[str]) -> float:  # modules of the last layers help
        return 0.5 + 0.05 * sum(int(n.split(".")[2]) >= 4 for n in names)

    ranked = {"l1": list(reversed(NAMES))}
    recs = [record("top", 2, 2, 1.0, None, NAMES[-2:], {**target, "fact": score(NAMES[-2:])}, 0.1, target, source,
                   "l1", kl_item_var=0.01)]
    recs += [record("random", 2, 2, 1.0, s, ["x"], {**target, "fact": 0.5 + 0.02 * s}, 0.2, target, source,
                    kl_item_var=0.01) for s in range(3)]
    draws = top_k_against_draws(score, ranked, [2], n_random=40, n_matched=10)
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "stage": "transplant", "metric": "fact", "target": target, "source": source,
        "meta": {"pair": pair, "n_candidates": 6, "scorers": ["l1"], "eval_points": 64, "ranked": ranked,
                 "source": "s", "target": "t"},
        "summary": summary_rows(recs, "fact", n_items=64, kl_items=64, target=target, source=source),
        "draws": {"1.0": draws}, "figure": "none.png", "config": {"transplant": {"alphas": [1.0]}}}))


def test_blocks_are_filled_per_pair_and_a_pair_twice_is_refused(tmp_path):
    make = _module()
    _job(tmp_path / "runs/a", "generation")
    _job(tmp_path / "runs/b", "instruct")
    doc = tmp_path / "T.md"
    doc.write_text("intro\n<!-- draws:start -->\nold\n<!-- draws:end -->\n<!-- generation:start -->\nold\n"
                   "<!-- generation:end -->\nmiddle\n<!-- instruct:start -->\nold\n<!-- instruct:end -->\nend\n")
    jobs = make.jobs_by_pair(tmp_path / "runs")
    text = doc.read_text()
    for pair, job in jobs.items():
        text = make.replace_block(text, pair, make.pair_markdown(job), doc)
    text = make.replace_block(text, "draws", make.draws_summary(jobs), doc)
    assert "old" not in text and text.startswith("intro\n") and "middle" in text and text.endswith("end\n")
    assert "| generation | `l1` | [2] |" in text  # top-2 (both last-layer modules) beats 40 single draws
    assert "Top-K among single random draws" in text and "seed_item_interval" in text
    _job(tmp_path / "runs/c", "instruct")
    with pytest.raises(SystemExit, match="two finished jobs"):
        make.jobs_by_pair(tmp_path / "runs")

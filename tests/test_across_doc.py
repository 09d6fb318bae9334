"""docs/make_across.py: the cells are pairs (donor, host), the BEYOND runs of other pairs stay out, and the
text-only choice never picks a method that used task data."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
import make_across  # noqa: E402
import make_results  # noqa: E402

TASK = {"kind": "unary", "n": 10, "operand_max": 1000, "test_size": 300, "val_size": 100, "split_seed": 0,
        "prompt_template": "Question: What is {a} modulo {n}?\nAnswer:"}


def _job(experiment: str, donor: str, host: str, variant: str, seed: int, fact: float, val: float,
         path: str | None = None) -> make_results.Job:
    facts = {"Tuned": 0.99, "Grafted": fact, "VanillaGraft": 0.0, "IdentityGraft": 0.0, "HostLoRA": 0.9,
             "Vanilla": 0.0, "Host": 0.0}
    models = {m: {"fact": f, "val_fact": val, "val_n": 100, "f_H": 1.0, "kl_host": 0.2, "MLM": 0.05, "n": 300}
              for m, f in facts.items()}
    config = {"seed": seed, "host": {"name": host}, "donor": {"name": donor}, "task": TASK}
    return make_results.Job(experiment, f"donor={donor} host={host} variant={variant}", seed,
                            {"models": models, "config": config})


def test_cells_are_pairs_and_the_text_only_choice_ignores_task_data(monkeypatch, tmp_path):
    jobs = [_job("across", "tiny-llama", "tiny-host", v, s, fact, val)
            for v, fact, val in (("paper", 0.02, 0.03), ("lstsq", 0.0, 0.01), ("distill", 0.7, 0.8))
            for s in range(2)]
    jobs += [_job("skill", "tiny-vanilla", "tiny-host", "distill", 0, 0.9, 0.9)]  # a BEYOND pair, not a cell here
    jobs += [_job("skill", "tiny-vanilla", "tiny-host-indep", "distill", 0, 0.7, 0.7)]  # a BEYOND cell that is one
    monkeypatch.setattr(make_across, "load_jobs", lambda runs: jobs)
    kept = make_across.across_jobs(tmp_path)
    assert {make_across.pair(j) for j in kept} == {("tiny-llama", "tiny-host"), ("tiny-vanilla", "tiny-host-indep")}
    labels = make_across.labels()
    summary = make_across.summary_table(kept, make_across.METHODS, make_across.pair_key, labels)
    assert summary[0].count("|") == 4  # method + two pairs
    distill = next(r for r in summary if r.startswith("| `distill`"))
    assert "0.700" in distill and "2 seeds" in distill
    text_only = {m: d for m, d in make_across.METHODS.items() if m in make_across.TEXT_ONLY}
    row = next(r for r in make_across.choices(kept, text_only, make_across.pair_key, labels) if "Llama" in r)
    assert row.endswith("`paper` |")
    row = next(r for r in make_across.choices(kept, make_across.METHODS, make_across.pair_key, labels) if "Llama" in r)
    assert row.endswith("`distill` |")


def test_the_halves_table_pools_the_diagnosed_seeds_of_each_pair_and_method(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)  # diagnose.json names its runs relative to the repository root
    for seed, input_half in ((0, 0.0), (1, 0.5)):
        job = Path(f"across/llama/{seed}")
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- +variant=distill\n")
        results = {"config": {"seed": seed, "donor": {"name": "tiny-llama"}, "host": {"name": "tiny-host"}}}
        (tmp_path / job / "results.json").write_text(json.dumps(results))
        facts = {"Tuned": 1.0, "Grafted": 0.1, "VanillaGraft": 0.0, "input_half": input_half, "output_half": 0.2,
                 "n": 64}
        out = tmp_path / "across_diagnose" / "llama" / str(seed)
        out.mkdir(parents=True)
        (out / "diagnose.json").write_text(json.dumps({"runs": [{"run_dir": str(job), "facts_teacher_forced": facts}]}))
    rows = make_across.diagnostics(tmp_path)
    assert len(rows) == 3 and rows[2].startswith("| Llama → GPTNeoX | `distill` | 2 |")
    assert rows[2].split(" | ")[6].startswith("0.250 [")  # input_half: the mean of the two seeds


def test_held_out_facts_across_a_pair_keep_only_that_pair_and_name_the_constant_answer(monkeypatch, tmp_path):
    recall = {"kind": "recall", "n": 10, "operand_max": 128, "test_size": 48, "val_size": 16, "split_seed": 0,
              "prompt_template": "Question: What is the code of {a}?\nAnswer:"}
    jobs = [_job("across_knowledge", "tiny-vanilla", "tiny-llama", v, s, fact, val)
            for v, fact, val in (("distill", 0.15, 0.1), ("procrustes_distill", 0.2, 0.2)) for s in range(2)]
    jobs += [_job("beyond_knowledge", "tiny-vanilla", "tiny-host", "distill", 0, 0.16, 0.1)]  # BEYOND's, not here
    for j in jobs:
        j.results["config"].update(task=recall, evaluation={"task_points": 48})
    monkeypatch.setattr(make_across, "load_jobs", lambda runs: jobs)
    kept = make_across.knowledge_jobs(tmp_path)
    assert {make_across.pair(j) for j in kept} == {("tiny-vanilla", "tiny-llama")} and len(kept) == 4
    text = "\n".join(make_across.knowledge_tables(kept, methods=make_across.METHODS, cell_of=make_across.pair_key,
                                                  labels=make_across.labels()))
    assert "the best constant answer scores 0.125" in text
    assert "`procrustes_distill`" in text and "`distill`" in text
    pick = next(r for r in text.splitlines() if r.startswith("| GPTNeoX → Llama"))
    assert pick.endswith("`procrustes_distill` |")  # validation keys pick the higher val_fact

"""docs/make_beyond.py: the fact shares against a hand computation, and the host LoRA control's own row."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
import make_beyond  # noqa: E402
import make_results  # noqa: E402

TASK = {"kind": "recall", "n": 10, "operand_max": 64, "test_size": 24, "val_size": 8, "split_seed": 0,
        "prompt_template": "Question: What is the code of {a}?\nAnswer:"}


def _job(variant: str, seed: int, facts: dict[str, float]) -> make_results.Job:
    models = {m: {"fact": f, "f_H": 1.0, "f_S": 1.0, "kl_host": 0.1, "MLM": 0.05, "n": 24} for m, f in facts.items()}
    config = {"seed": seed, "host": {"name": "tiny-host"}, "task": TASK, "evaluation": {"task_points": 64}}
    setting = f"host=tiny-host variant={variant}" if variant != "paper" else "host=tiny-host"
    return make_results.Job("beyond_knowledge", setting, seed, {"models": models, "config": config})


def test_fact_shares_match_a_hand_computation():
    from grafting.metrics.stats import format_interval, share_interval

    jobs = [_job("distill", s, {"Tuned": 1.0, "Grafted": g, "VanillaGraft": 0.5}) for s, g in enumerate((0.8, 0.7))]
    chance = make_results.constant_fact(jobs[0])
    assert 0 < chance < 0.5  # 24 balanced facts: one digit answers about a tenth
    cells = make_results.share_row("x", jobs).strip("| ").split(" | ")
    over_control = share_interval([0.8, 0.7], [0.5, 0.5], [1.0, 1.0], 24)
    assert over_control[0] == pytest.approx((0.75 - 0.5) / (1.0 - 0.5))
    assert cells[2] == format_interval(over_control)
    assert cells[3] == cells[2]  # the control lies above chance, so it is the floor
    low = [_job("paper", 0, {"Tuned": 1.0, "Grafted": 0.3, "VanillaGraft": 0.0})]
    cells = make_results.share_row("x", low).strip("| ").split(" | ")
    assert cells[3].startswith(f"{(0.3 - chance) / (1.0 - chance):.3f}")


def _skill_job(host: str, variant: str, seed: int, facts: dict[str, float], val: float = 0.5) -> make_results.Job:
    models = {m: {"fact": f, "val_fact": val, "val_n": 100, "f_H": 1.0, "kl_host": 0.1, "MLM": 0.05, "n": 300}
              for m, f in facts.items()}
    config = {"seed": seed, "host": {"name": host}, "task": TASK, "evaluation": {"task_points": 24}}
    return make_results.Job("skill_2x2", f"host={host} variant={variant}", seed, {"models": models, "config": config})


def test_host_lora_rows_show_the_lora_not_a_second_copy_of_the_paper_graft():
    jobs = [_skill_job("tiny-host", v, s, {"Tuned": 1.0, "Grafted": 0.1, "VanillaGraft": 0.0, "IdentityGraft": 0.0,
                                           "HostLoRA": 0.9, "Vanilla": 0.0, "Host": 0.0})
            for v in ("paper", "host_lora") for s in range(2)]
    lora_rows = [r for r in make_beyond.cell_table(jobs) if r.startswith("| `host_lora`")]
    assert [r.split(" | ")[1] for r in lora_rows] == ["HostLoRA"]
    assert lora_rows[0].split(" | ")[4].startswith("0.900")  # the fact column holds HostLoRA's, not Grafted's
    summary = [r for r in make_beyond.summary_table(jobs) if r.startswith("| `host_lora`")]
    assert summary[0].split(" | ")[1].startswith("0.900")


def test_the_2x2_summary_and_the_validation_choice():
    facts = {"Tuned": 1.0, "Grafted": 0.8, "VanillaGraft": 0.1, "IdentityGraft": 0.1, "Vanilla": 0.0, "Host": 0.0}
    jobs = [_skill_job(h, v, s, facts, val={"paper": 0.2, "procrustes_init": 0.7}[v])
            for h in ("tiny-host", "tiny-host-m") for v in ("paper", "procrustes_init") for s in range(3)]
    jobs = [j for j in jobs if not (j.results["config"]["host"]["name"] == "tiny-host-m" and j.setting.endswith("paper"))]
    lines = make_beyond.summary_table(jobs)
    assert "shared init, same (`tiny-host`)" in lines[0] and "independent init, 1.5x (`tiny-host-m`)" in lines[0]
    paper = next(r for r in lines if r.startswith("| `paper`"))
    assert paper.endswith("not run |") and "vanilla block 0.100" in paper
    shared, wider = make_beyond.choices(jobs)[2:]
    assert shared.endswith("| `procrustes_init` |")
    assert wider.endswith("| no choice (only `procrustes_init` ran) |")  # the paper's method did not run there
    row = next(r for r in make_beyond.cell_table(jobs) if "| Grafted |" in r)
    assert "| shown |" in row  # 0.8 of 300 items in 3 seeds lies above 0.1


def test_the_figures_are_drawn(tmp_path):
    facts = {"Tuned": 1.0, "Grafted": 0.8, "VanillaGraft": 0.1, "IdentityGraft": 0.1, "HostLoRA": 0.5,
             "Vanilla": 0.0, "Host": 0.0}
    jobs = [_skill_job(h, v, s, facts) for h in ("tiny-host", "tiny-host-indep") for v in ("paper", "host_lora")
            for s in range(2)]
    path = make_beyond.skill_figure(jobs, tmp_path / "skill.png")
    assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"
    for job in jobs:
        job.results["models"]["Grafted"]["f_S"] = 1.0
    path = make_results.protocol_figure(jobs, tmp_path / "protocol.png")
    assert path.stat().st_size > 5000


def test_a_tie_on_validation_is_shown_as_a_tie():
    facts = {"Tuned": 1.0, "Grafted": 0.2, "VanillaGraft": 0.1, "IdentityGraft": 0.1, "Vanilla": 0.0, "Host": 0.0}
    jobs = [_skill_job("tiny-host", v, s, facts, val={"paper": 0.0, "distill": 0.5, "distill_long": 0.5}[v])
            for v in ("paper", "distill", "distill_long") for s in range(2)]
    assert make_beyond.choices(jobs)[2].endswith("| `distill` `distill_long` (a tie) |")


def test_methods_are_compared_on_the_seeds_they_all_ran():
    facts = {"Tuned": 1.0, "Grafted": 0.2, "VanillaGraft": 0.1, "IdentityGraft": 0.1, "Vanilla": 0.0, "Host": 0.0}
    # distill is extended to seeds 2-5 where it scores poorly on validation; the choice looks at seeds 0-1 only
    jobs = [_skill_job("tiny-host", "paper", s, facts, val=0.4) for s in range(2)]
    jobs += [_skill_job("tiny-host", "distill", s, facts, val=0.6 if s < 2 else 0.0) for s in range(6)]
    row = make_beyond.choices(jobs)[2]
    assert row.startswith("| `tiny-host` | 2 |") and row.endswith("| `distill` |")


def test_a_cell_with_one_method_names_no_pick():
    facts = {"Tuned": 1.0, "Grafted": 0.2, "VanillaGraft": 0.1, "IdentityGraft": 0.1, "Vanilla": 0.0, "Host": 0.0}
    jobs = [_skill_job("tiny-host", v, s, facts, val={"paper": 0.4, "distill": 0.3}[v]) for v in ("paper", "distill")
            for s in range(2)]
    jobs += [_skill_job("tiny-host-l", "distill", 0, facts, val=0.6)]
    rows = make_beyond.choices(jobs)[2:]
    assert rows[0].endswith("| `paper` |")
    assert rows[1].endswith("| no choice (only `distill` ran) |")


def test_a_job_found_in_two_sweep_folders_is_refused(tmp_path):
    import json

    for folder in ("tiny-host-m", "tiny-host-m-s1"):  # a seed re-run in its own folder, then in the full sweep
        job = tmp_path / "skill_2x2" / folder / "0"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n- host=tiny-host-m\n- +variant=paper\n")
        (job / "results.json").write_text(json.dumps({"config": {"seed": 1, "host": {"name": "tiny-host-m"}}}))
    with pytest.raises(SystemExit, match="the same job twice"):
        make_results.load_jobs(tmp_path)
    (tmp_path / "skill_2x2" / "tiny-host-m-s1" / "0" / ".hydra" / "overrides.yaml").write_text(
        "- seed=1\n- host=tiny-host-m\n- +variant=distill\n")
    assert len(make_results.load_jobs(tmp_path)) == 2  # another method: two jobs

"""Sweep tables: every model, the code and versions the jobs came from, and no averaging of mixed code."""

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_job

from grafting.errors import ConfigError
from grafting.metrics.stats import seed_item_interval
from grafting.reporting.aggregate import aggregate, collect

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.24.0"}


def _job(sweep: Path, num: int, overrides: list[str], models: dict, stage: str = "pipeline", commit: str = "a" * 40,
         transformers: str = "5.24.0") -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    seed = int(next(o.split("=")[1] for o in overrides if o.startswith("seed=")))
    (job / "results.json").write_text(json.dumps({
        "stage": stage, "models": models, "config": {"seed": seed},
        "provenance": {"git": {"commit": commit, "dirty": False},
                       "versions": {**VERSIONS, "transformers": transformers}, "device": {"type": "cpu"}}}))


def _sweep(tmp_path: Path, **kw) -> Path:
    """loss=residual,logits x seed=0,1: Grafted's f_S is 0.1 * (seed + 1), Tuned's 1."""
    sweep = tmp_path / "sweep"
    for i, (loss, seed) in enumerate([(x, s) for x in ("residual", "logits") for s in (0, 1)]):
        extra = kw if i == 3 else {}
        _job(sweep, i, [f"loss={loss}", f"seed={seed}"],
             {"Grafted": {"f_S": 0.1 * (seed + 1), "n": 8}, "Tuned": {"f_S": 1.0, "n": 8}}, **extra)
    return sweep


def test_every_model_is_tabulated_with_its_provenance(tmp_path):
    report = aggregate(_sweep(tmp_path), tmp_path / "out")
    assert report["jobs"] == 4 and set(report["summary"]) == {"Grafted", "Tuned"}
    mean, low, high, n = report["summary"]["Grafted"]["loss=residual"]["f_S"]
    assert mean == pytest.approx(0.15) and n == 2 and low <= mean <= high
    assert (mean, low, high) == pytest.approx(seed_item_interval(
        [r["metrics"]["f_S"] for r in collect(tmp_path / "sweep") if r["overrides"] == {"loss": "residual"}],
        n_items=8, proportion=True))
    md = (tmp_path / "out" / "aggregate.md").read_text()
    assert md.startswith("**Grafted** over 4 jobs") and "**Tuned** over 4 jobs" in md
    assert f"commit {'a' * 40} (clean)" in md and "transformers 5.24.0" in md and "torch 2.13.0+cpu" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "aggregate.csv").read_text())))
    assert [(r["model"], r["run"]) for r in rows] == [("Grafted", "loss=residual"), ("Grafted", "loss=logits"),
                                                      ("Tuned", "loss=residual"), ("Tuned", "loss=logits")]
    assert {r["commit"] for r in rows} == {"a" * 40} and "transformers=5.24.0" in rows[0]["versions"]
    data = json.loads((tmp_path / "out" / "aggregate.json").read_text())
    assert data["code"]["git.commit"] == "a" * 40 and data["mixed"] == {}
    tuned = data["models"]["Tuned"]["rows"]["loss=logits"]["f_S"]  # 8 of 8 items in both seeds: still an interval
    assert tuned["mean"] == 1.0 and tuned["high"] == 1.0 and tuned["low"] < 1.0 and tuned["n"] == 2
    assert not (tmp_path / "sweep" / "aggregate.md").exists()  # written where asked, not into the sweep

    one = aggregate(tmp_path / "sweep", tmp_path / "out", model="Tuned")
    assert set(one["summary"]) == {"Tuned"} and (tmp_path / "out" / "aggregate_Tuned.md").is_file()


@pytest.mark.parametrize("change,field,values", [
    ({"commit": "b" * 40}, "git.commit", ["a" * 40, "b" * 40]),
    ({"transformers": "5.23.0"}, "versions.transformers", ["5.24.0", "5.23.0"]),
])
def test_mixed_code_or_versions_are_refused_unless_allowed(tmp_path, change, field, values):
    sweep = _sweep(tmp_path, **change)
    with pytest.raises(ConfigError) as err:
        aggregate(sweep, tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith("[allow_mixed]") and field in msg and "allow_mixed=true" in msg
    assert f"{values[0]} (jobs 0, 1, 2)" in msg and f"{values[1]} (jobs 3)" in msg
    assert not (tmp_path / "out").exists()
    report = aggregate(sweep, tmp_path / "out", allow_mixed=True)
    assert report["mixed"] == {field: {values[0]: ["0", "1", "2"], values[1]: ["3"]}}
    assert "Mixed code or versions" in (tmp_path / "out" / "aggregate.md").read_text()


def test_a_sweep_without_the_model_names_what_it_holds(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        _job(sweep, seed, [f"seed={seed}"], {"Tuned": {"f_S": 1.0}, "Vanilla": {"f_S": 0.0}}, stage="finetune")
    with pytest.raises(ConfigError) as err:
        aggregate(sweep, tmp_path / "out", model="Grafted")
    msg = str(err.value)
    assert msg.startswith("[aggregate_model]") and "'Grafted'" in msg and "aggregate_model=" in msg
    assert "finetune (2 jobs)" in msg and "Tuned (2 jobs)" in msg and "Vanilla (2 jobs)" in msg
    assert set(aggregate(sweep, tmp_path / "out")["summary"]) == {"Tuned", "Vanilla"}  # default: every model


def test_evaluate_py_reports_an_unreadable_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["seed=0"], {}, stage="transplant")
    with pytest.raises(ConfigError, match=r"^\[aggregate\] nothing to tabulate") as err:
        run_job([f"aggregate={sweep}"], tmp_path / "ev", config_name="evaluate")
    assert "transplant (1 jobs)" in str(err.value)

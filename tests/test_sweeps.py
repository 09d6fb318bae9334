"""Multiruns: plain overrides, a local host path, aggregation, and every experiment with debug=smoke."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, run_job

from grafting.models.loading import load_model

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["loss_ablation", "dest_layer", "align_data", "strategy", "host_size"]


def _run(script: str, args: list[str], tmp_path: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled")
    multirun = ["-m"] if "-m" in args else []  # argparse wants the flag after the overrides
    args = [a for a in args if a != "-m"]
    return subprocess.run([sys.executable, script, f"paths.log_dir={tmp_path}", *args, *multirun], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # about a minute of subprocess runs; CI runs it in its slow step
def test_multirun_with_local_host_and_aggregate(tmp_path):
    host, tokenizer = load_model({"source": "random", "seed": 3, "tokenizer_vocab": 4096, "arch": {
        "model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "vocab_size": 4096, "max_position_embeddings": 256}}, "host")
    host.save_pretrained(tmp_path / "host")
    tokenizer.save_pretrained(tmp_path / "host")
    proc = _run("train.py", ["-m", "debug=smoke", f"host={tmp_path / 'host'}", "graft.layer=0,1", "seed=0,1",
                             "evaluation.language.n_texts=2"], tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((tmp_path / "out").rglob("results.json"))
    assert len(results) == 4
    assert {json.loads(p.read_text())["config"]["host"]["path"] for p in results} == {str(tmp_path / "host")}
    sweep_dir = results[0].parent.parent
    proc = _run("evaluate.py", [f"aggregate={sweep_dir}"], tmp_path / "ev")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = next((tmp_path / "ev").rglob("aggregate.md")).parent  # evaluate.py's own folder, not the sweep's
    assert not list(sweep_dir.glob("aggregate*")) and not list(sweep_dir.glob("*.png"))
    table = (out / "aggregate.md").read_text()
    assert all(f"**{m}** over 4 jobs" in table for m in ("Tuned", "Grafted", "Vanilla", "Host")), table
    grafted = table.split("**Grafted**")[1].split("\n**")[0]  # up to the next model's table
    rows = [line for line in grafted.splitlines() if line.startswith("| graft.layer=")]
    assert len(rows) == 2 and all(" [" in r and r.rstrip().endswith("| 2 |") for r in rows), table
    assert "Runs made with commit" in table
    assert (out / "aggregate.csv").is_file() and (out / "graft.layer.png").is_file()
    assert (out / "graft.layer_Tuned.png").is_file()
    run_job([f"aggregate={sweep_dir}", "aggregate_model=Tuned"], tmp_path / "ev2", "evaluate")  # in-process
    assert next((tmp_path / "ev2").rglob("aggregate_Tuned.md")).read_text().startswith("**Tuned**")


def sweep_jobs(overrides: list[str], tmp_path: Path) -> list[list[str]]:
    """The jobs ``python train.py -m <overrides>`` launches, each as its list of overrides: the experiment's
    ``hydra.sweeper.params``, then the command line (which wins on a shared key), expanded by Hydra's basic sweeper."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*fixed, f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
    parsed = parser.parse_overrides([*params, *overrides])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_sweeps_with_smoke(tmp_path, experiment):
    """Every job of the experiment's sweep, composed and run in this process (the launcher itself runs in
    the multirun test above): dest 0,1 and one seed keep it short; the other axis is swept as configured."""
    extra = ["graft.dest=0,1"] if experiment == "dest_layer" else []
    base = [f"experiment={experiment}_tiny", "debug=smoke", "seed=0"]
    jobs = sweep_jobs([*base, *extra], tmp_path)
    # each ablation sweeps its non-protocol values only (the protocol's row is experiment=paper_protocol_tiny)
    expected = {"loss_ablation": 1, "dest_layer": 2, "align_data": 2, "strategy": 1, "host_size": 3}[experiment]
    assert len(jobs) == expected and all("seed=0" in job for job in jobs), jobs
    for i, job in enumerate(jobs):
        run = run_job(job, tmp_path / str(i))
        results = json.loads((run / "results.json").read_text())
        assert {"Tuned", "Grafted", "Host"} <= set(results["models"]), job

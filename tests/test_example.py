"""examples/graft_in_python.py runs at smoke size with no Hydra config (tiny random models, a few steps)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_graft_in_python_runs_without_hydra(tmp_path):
    env = dict(os.environ, CI="true", WANDB_MODE="disabled", GRAFTING_CACHE_DIR=str(tmp_path / "cache"),
               TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "examples/graft_in_python.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Grafted" in proc.stdout and "k=4" in proc.stdout
    source = (ROOT / "examples" / "graft_in_python.py").read_text()
    assert not any(word in source for word in ("import hydra", "from hydra", "omegaconf", "DictConfig"))

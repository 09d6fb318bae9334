"""The package works installed, outside the clone: build the wheel, install it into a fresh venv, and run
examples/graft_in_python.py there at smoke size (tiny random models, a few steps, no Hydra config).

The venv sees this environment's site-packages for the dependencies (installing torch again would take
minutes), but ``grafting`` itself comes from the wheel: the test checks where it was imported from.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.e2e
def test_the_built_wheel_installs_and_runs_the_example_outside_the_clone(tmp_path):
    dist, venv, work, source = tmp_path / "dist", tmp_path / "venv", tmp_path / "work", tmp_path / "source"
    work.mkdir()
    # built from a copy: an in-tree build rewrites build/ and grafting.egg-info under the tests running beside it
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".cache", "outputs", "build", "dist",
                                                                "*.egg-info", "__pycache__", ".venv", "multirun"))
    # the same backend as `python -m build` (setuptools, pyproject.toml), without an isolated build env (offline)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)])
    wheel = next(dist.glob("grafting-*.whl"))
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)])

    env = dict(os.environ, CI="true", WANDB_MODE="disabled", GRAFTING_CACHE_DIR=str(tmp_path / "cache"),
               TMPDIR=str(tmp_path), PYTHONPATH="")
    where = _run([str(python), "-c", "import grafting; print(grafting.__file__)"], cwd=work, env=env).stdout
    assert str(venv) in where, f"grafting was imported from {where.strip()}, not the installed wheel"
    # the shipped presets are package data: a named preset resolves with no conf/ in sight
    spec = _run([str(python), "-c", "from grafting import api; print(api.model_spec('tiny-host')['arch'])"],
                cwd=work, env=env).stdout
    assert "'hidden_size': 128" in spec

    example = work / "graft_in_python.py"
    example.write_text((ROOT / "examples" / "graft_in_python.py").read_text())
    proc = _run([str(python), str(example)], cwd=work, env=env)
    assert "Grafted" in proc.stdout and "k=4" in proc.stdout
    source = example.read_text()
    assert not any(word in source for word in ("import hydra", "from hydra", "omegaconf", "DictConfig"))

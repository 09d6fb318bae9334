"""Progress bars: on in a terminal, off under CI or without a TTY (tests/test_cli.py runs train.py under CI in a
terminal and finds no bar)."""

import os
import re
import sys
from pathlib import Path

import pytest
from conftest import compose_config, run_in_terminal
from omegaconf import OmegaConf

import grafting  # noqa: F401  (registers ${progress_bar:})
from grafting.progress import progress, show_progress

ROOT = Path(__file__).resolve().parents[1]
BAR = re.compile(r"\d+%\||\d(?:it/s|s/it)|━")  # tqdm's "40%|", its rate, and rich's bar glyph

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")


def _env(ci: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GRAFTING_PROGRESS")}
    return {**env, "WANDB_MODE": "disabled", **({"CI": "true"} if ci else {})}


def test_resolver_follows_tty_and_ci(monkeypatch, tmp_path):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GRAFTING_PROGRESS", raising=False)
    node = OmegaConf.create({"bar": "${progress_bar:}"})
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert node.bar is True
    assert compose_config([], tmp_path).trainer.enable_progress_bar is True
    monkeypatch.setenv("CI", "true")
    assert node.bar is False
    monkeypatch.setenv("GRAFTING_PROGRESS", "1")
    assert node.bar is True
    monkeypatch.delenv("CI")
    monkeypatch.delenv("GRAFTING_PROGRESS")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert node.bar is False and show_progress() is False
    assert progress(range(3), desc="x") == range(3)  # no bar: the iterable itself


@pytest.mark.parametrize("ci", [False, True])
def test_progress_in_a_terminal(ci):
    code = "from grafting.progress import progress\nfor _ in progress(range(3), desc='probe'): pass\n"
    rc, out = run_in_terminal([sys.executable, "-c", code], _env(ci), timeout=120)
    assert rc == 0, out[-2000:]
    assert bool(BAR.search(out)) is not ci, out[-2000:]

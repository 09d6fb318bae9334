"""Progress bars: on in a terminal, off under CI or without a TTY."""

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

import grafting  # noqa: F401  (registers ${progress_bar:})
from grafting.progress import progress, show_progress

ROOT = Path(__file__).resolve().parents[1]
BAR = re.compile(r"\d+%\||\d(?:it/s|s/it)|━")  # tqdm's "40%|", its rate, and rich's bar glyph

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")


def run_in_terminal(cmd: list[str], env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """Run ``cmd`` with stdout and stderr on a pseudo-terminal (isatty() is True); return (rc, output)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a real terminal has a size
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), b"".join(chunks).decode(errors="replace")


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


def test_smoke_run_under_ci_shows_no_bars(tmp_path):
    """`CI=true python train.py debug=smoke` in a terminal: the whole log is free of bars."""
    cmd = [sys.executable, "train.py", f"paths.log_dir={tmp_path}", "debug=smoke",
           "evaluation.language.mlm_model=null"]  # the run, not the shipped MLM scorer, is under test
    rc, out = run_in_terminal(cmd, _env(ci=True))
    assert rc == 0, out[-3000:]
    assert "Table 1: modular addition" in out
    assert not BAR.search(out), BAR.search(out)
